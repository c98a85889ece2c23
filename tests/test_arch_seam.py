"""The seam (pyrmap.arch): declared whole, split by role, implemented whole by every arch."""

import pytest

from pyrmap.arch import (ARCH_COUNTERS, CORE_COUNTERS, DEVICE_COUNTERS, EVENTS, TIMED_COUNTERS,
                         Arch, CpuPort, DevicePort, Environment, Inspection, PteOps, PteWrite)
from pyrmap.physmem import PhysMem
from pyrmap.pte import pfn_pte
from pyrmap.softarch import SoftArch

ROLES = (PteOps, Environment, CpuPort, DevicePort, Inspection)


def test_arch_is_every_role_and_each_role_declares_its_methods():
    for role in ROLES:
        assert issubclass(Arch, role)
    assert {"pte_load", "cmpxchg", "flush_tlb_all"} <= PteOps.__abstractmethods__
    assert {"lockdep", "lock_block", "lock_wake", "cycle"} <= Environment.__abstractmethods__
    assert {"switch_mm", "satp", "set_satp", "cpu_access"} == CpuPort.__abstractmethods__
    assert {"dev_access", "dev_ack_fault", "dev_fill", "dev_young", "dev_inval",
            "dev_entries"} == DevicePort.__abstractmethods__
    assert {"tlb_entries", "pte_history", "counters", "perf",
            "dev_perf"} == Inspection.__abstractmethods__



@pytest.mark.parametrize("missing", ["cpu_access", "dev_ack_fault", "pte_history", "perf",
                                     "lock_block", "cycle"])
def test_an_arch_lacking_a_method_fails_at_construction(missing):
    body = {name: getattr(SoftArch, name) for name in Arch.__abstractmethods__
            if name != missing}
    Partial = type("Partial", (Arch,), body)
    with pytest.raises(TypeError, match=f"abstract method.*{missing}"):
        Partial(PhysMem(8), 1, svadu=True, asid_bits=9)


def test_softarch_and_cosim_arches_implement_the_whole_seam():
    from cosim.arch import CosimArch
    from cosim.devarch import DevArch
    assert not SoftArch.__abstractmethods__
    assert not CosimArch.__abstractmethods__
    assert issubclass(DevArch, DevicePort) and not DevArch.__abstractmethods__


def test_constructor_contract_sets_the_common_attributes():
    a = SoftArch(PhysMem(16), 3, svadu=False, asid_bits=5)
    assert (a.ncores, a.svadu, a.asid_bits) == (3, False, 5)
    assert isinstance(a.mem, PhysMem)
    with pytest.raises(TypeError, match=r"^Core count must be a positive integer, not 0$"):
        Arch.__init__(a, a.mem, 0, svadu=True, asid_bits=9)


def test_counter_names_are_defined_once():
    import hdl.core
    import hdl.device
    assert hdl.core.CORE_COUNTERS is CORE_COUNTERS
    assert hdl.device.DEVICE_COUNTERS is DEVICE_COUNTERS
    a = SoftArch(PhysMem(16), 2)
    assert tuple(a.counters()) == ARCH_COUNTERS
    assert set(a.perf(1)) == set(CORE_COUNTERS) - set(TIMED_COUNTERS)
    assert tuple(a.dev_perf()) == DEVICE_COUNTERS


def test_notify_accepts_only_declared_events_with_their_fields():
    a = SoftArch(PhysMem(16), 1)
    with pytest.raises(ValueError, match=r"^Event 'frame_freed' is not one of the declared"):
        a.notify("frame_freed", pfn=1)
    seen = []
    a.observer = lambda ev, **d: seen.append((ev, d))
    a.notify("frame_alloc", pfn=3)
    assert seen == [("frame_alloc", {"pfn": 3})]
    with pytest.raises(ValueError, match=r"^Event 'frame_alloc' carries pfn, not pfn, page$"):
        a.notify("frame_alloc", pfn=3, page=None)
    assert all(e.name == name and e.doc for name, e in EVENTS.items())


def test_pte_history_is_one_typed_record():
    a = SoftArch(PhysMem(16), 1, history=True)
    a.set_pte_at(None, 0, 0x1008, pfn_pte(5, 0x1F))
    (w,) = a.pte_history(0x1008)
    assert isinstance(w, PteWrite) and w.value == pfn_pte(5, 0x1F) and "set_pte_at" in w.who
    assert str(w).startswith("sw set_pte_at thread main: ")
    timed = PteWrite(3 << 10, "core0 walker", "CAS", cycle=12, seq=4)
    assert str(timed).startswith("#4 cycle 12 core0 walker CAS: ")


def test_dev_ack_fault_consumes_the_record():
    from pyrmap.pte import AccessType, FaultKind
    a = SoftArch(PhysMem(16), 1)
    assert a.dev_access(0x5000, AccessType.LOAD, 3)[0] == FaultKind.MISS
    assert a.dev_ack_fault() == (0x5000, 3, AccessType.LOAD)
    assert a.dev_ack_fault() is None


def test_cosim_arch_counters_have_the_declared_names():
    from types import SimpleNamespace

    from cosim.arch import CosimArch
    class Dut:                      # every port a handle reading 0
        def __getattr__(self, name):
            return SimpleNamespace(value=0)

    a = CosimArch(Dut(), PhysMem(8), None, ncores=2, svadu=False, asid_bits=4)
    assert tuple(a.counters()) == ARCH_COUNTERS and not any(a.counters().values())
    assert (a.ncores, a.svadu, a.asid_bits) == (2, False, 4)
