"""The DeviceMmu (secondary MMU) ports, driven and compared with SoftArch's device model.

:class:`DeviceDriver` drives ``dev__req``, ``dev__fill``, ``dev__young``, ``dev__inval`` and
``dev__fault__ack`` and samples the responses; :class:`DeviceChecker` performs the same
operation on :class:`pyrmap.softarch.SoftArch`'s device TLB (``dev_*``) and records every
difference as a violation of kind ``device``: the access outcome (fault kind and paddr), the
fault record (held until acknowledged, not overwritten by a second miss), the young bit's
test-and-clear, invalidations, and the ``dev__perf__*`` counters at the end.

The random workload keeps at most ``dev_entries`` distinct 4 KiB mappings alive, so the
comparison never depends on which entry a replacement policy evicts, and fills no global
entries, so no two entries ever match one lookup (which one answers would be
implementation-defined).
"""

from __future__ import annotations

import random

from pyrmap.arch import DEVICE_COUNTERS, InvalKind
from pyrmap.pte import _PAGE_R, _PAGE_U, _PAGE_W, _PAGE_X, AccessType, FaultKind

from ..memory import cycle_now
from ..ports import read_counters
from ..scoreboard import Violation
from .tables import sign_extend_va

__all__ = ["DeviceDriver", "DeviceChecker"]


def pte_perm_to_port(perm: int) -> int:
    """R W X U in PTE positions (bits 1..4) -> the fill port's ``perm`` (bits 0..3)."""
    return (perm >> 1) & 0xF


class DeviceDriver:
    """Drives the ``dev__…`` ports of ``top`` (one operation at a time).

    Members (ports)
    ---------------
    drives ``req__valid/vaddr/op/asid``, ``fill__valid/vaddr/asid/ppn/level/perm/g``,
    ``young__valid/vaddr/asid``, ``inval__valid/kind/vaddr/asid``, ``fault__ack``; samples
    ``req__ready``, ``resp__*``, ``fault__valid/vaddr/asid/op``, ``fill__ready``,
    ``young__ack/young``, ``inval__ack``.
    """

    TIMEOUT = 1000

    def __init__(self, dut):
        self.dut = dut

    def _s(self, name):
        return getattr(self.dut, f"dev__{name}")

    async def _wait(self, name: str, what: str) -> None:
        from cocotb.triggers import RisingEdge
        for _ in range(self.TIMEOUT):
            await RisingEdge(self.dut.clk)
            if int(self._s(name).value):
                return
        raise TimeoutError(f"dev {what}: {name} not seen in {self.TIMEOUT} cycles")

    async def access(self, vaddr: int, op: AccessType, asid: int) -> tuple[FaultKind, int]:
        from cocotb.triggers import RisingEdge
        self._s("req__vaddr").value = vaddr
        self._s("req__op").value = int(op)
        self._s("req__asid").value = asid
        self._s("req__valid").value = 1
        await self._wait("req__ready", "request")
        self._s("req__valid").value = 0
        if not int(self._s("resp__valid").value):
            await self._wait("resp__valid", "response")
        return FaultKind(int(self._s("resp__fault").value)), int(self._s("resp__paddr").value)

    def fault_record(self):
        """The pending fault record (vaddr, asid, op) or None (sampled now)."""
        if not int(self._s("fault__valid").value):
            return None
        return (int(self._s("fault__vaddr").value), int(self._s("fault__asid").value),
                AccessType(int(self._s("fault__op").value)))

    async def ack_fault(self) -> None:
        from cocotb.triggers import RisingEdge
        self._s("fault__ack").value = 1
        await RisingEdge(self.dut.clk)
        self._s("fault__ack").value = 0
        await RisingEdge(self.dut.clk)

    async def fill(self, vaddr: int, asid: int, ppn: int, level: int, perm: int, g: bool):
        self._s("fill__vaddr").value = vaddr
        self._s("fill__asid").value = asid
        self._s("fill__ppn").value = ppn
        self._s("fill__level").value = level
        self._s("fill__perm").value = pte_perm_to_port(perm)
        self._s("fill__g").value = int(g)
        self._s("fill__valid").value = 1
        await self._wait("fill__ready", "fill")
        self._s("fill__valid").value = 0

    async def young(self, vaddr: int, asid: int) -> bool:
        self._s("young__vaddr").value = vaddr
        self._s("young__asid").value = asid
        self._s("young__valid").value = 1
        await self._wait("young__ack", "young")
        self._s("young__valid").value = 0
        return bool(int(self._s("young__young").value))

    async def inval(self, kind: InvalKind, vaddr: int, asid: int) -> None:
        self._s("inval__kind").value = int(kind)
        self._s("inval__vaddr").value = vaddr
        self._s("inval__asid").value = asid
        self._s("inval__valid").value = 1
        await self._wait("inval__ack", "inval")
        self._s("inval__valid").value = 0

    def counters(self) -> dict:
        return read_counters(self.dut, "dev", DEVICE_COUNTERS)


class DeviceChecker:
    """Runs a random device workload on the RTL and on SoftArch's device model, compares.

    Parameters
    ----------
    driver : DeviceDriver
    arch : pyrmap.softarch.SoftArch
        Its ``dev_*`` methods are the model.
    rng : random.Random
    dev_entries : int
    asid_bits : int
    """

    def __init__(self, driver: DeviceDriver, arch, rng: random.Random, *, dev_entries: int,
                 asid_bits: int):
        self.drv, self.arch, self.rng = driver, arch, rng
        self.violations: list[Violation] = []
        amax = 1 << max(asid_bits, 1)
        self.asids = rng.sample(range(amax), min(2, amax))
        npages = max(1, dev_entries // len(self.asids))     # never more live entries than slots
        self.pages = [sign_extend_va(rng.choice([0, 1, 300]) << 30 | rng.randrange(512) << 21
                                     | i << 12) for i in range(npages)]
        self.pages = list(dict.fromkeys(self.pages))
        self.mapped: dict[tuple[int, int], tuple] = {}
        self.trace: list[str] = []
        self.stats = {"access": 0, "miss": 0, "fill": 0, "young": 0, "young_set": 0,
                      "inval": 0, "page": 0, "hit": 0}

    def fail(self, message: str) -> None:
        if not self.violations:
            message += "; last operations: " + "; ".join(self.trace)
        self.violations.append(Violation("device", cycle_now(), message))

    def note(self, text: str) -> None:
        self.trace = (self.trace + [f"@{cycle_now()} {text}"])[-12:]

    async def step(self) -> None:
        rng = self.rng
        r = rng.random()
        asid = rng.choice(self.asids)
        va = rng.choice(self.pages) | (rng.randrange(512) << 3)
        if r < 0.55:
            await self._access(va, rng.choice(list(AccessType)), asid)
        elif r < 0.75:
            await self._fill(va, asid)
        elif r < 0.9:
            self.note(f"young 0x{va:x} asid {asid}")
            got = await self.drv.young(va, asid)
            want = self.arch.dev_young(va, asid)
            self.stats["young"] += 1
            self.stats["young_set"] += int(want)
            if got != want:
                self.fail(f"young test-and-clear of 0x{va:x} asid {asid}: RTL {int(got)}, "
                          f"model {int(want)}")
        else:
            await self._inval(rng.choice(list(InvalKind)), va, asid)

    async def directed_global(self) -> None:
        """A global entry: hit from another ASID, kept by an ASID invalidation, removed by a
        VA+ASID invalidation of any ASID (compared with the model at every step)."""
        a, b = self.asids[0], self.asids[-1]
        va = self.pages[0] | 0x18
        await self._inval(InvalKind.ALL, 0, 0)
        self.note(f"fill global 0x{va:x} asid {a}")
        await self.drv.fill(va, a, 0x4321, 0, _PAGE_R | _PAGE_W, True)
        self.arch.dev_fill(va, a, 0x4321, 0, _PAGE_R | _PAGE_W, True)
        await self._access(va, AccessType.LOAD, b)
        await self._inval(InvalKind.ASID, 0, b)
        await self._access(va, AccessType.STORE, b)
        await self._inval(InvalKind.VA_ASID, va, b)
        await self._access(va, AccessType.LOAD, a)
        self.stats["global"] = 1

    async def _inval(self, kind: InvalKind, va: int, asid: int) -> None:
        self.note(f"inval {kind.name} 0x{va:x} asid {asid}")
        await self.drv.inval(kind, va, asid)
        self.arch.dev_inval(kind, va, asid)
        self.stats["inval"] += 1

    async def _fill(self, va: int, asid: int) -> None:
        rng = self.rng
        perm = rng.choice([_PAGE_R, _PAGE_R | _PAGE_W, _PAGE_R | _PAGE_X, _PAGE_X,
                           _PAGE_R | _PAGE_W | _PAGE_X]) | (_PAGE_U if rng.random() < 0.5 else 0)
        ppn = rng.randrange(1, 1 << 24)
        # A global entry next to another ASID's entry for the same page would make two entries
        # match one lookup, and which one answers is legitimately implementation-defined; the
        # step-by-step comparison needs one answer, so device fills are never global.
        g = False
        self.note(f"fill 0x{va:x} asid {asid} ppn 0x{ppn:x} perm 0x{perm:x} g {int(g)}")
        await self.drv.fill(va, asid, ppn, 0, perm, g)
        self.arch.dev_fill(va, asid, ppn, 0, perm, g)
        self.stats["fill"] += 1

    async def _access(self, va: int, op: AccessType, asid: int) -> None:
        from cocotb.triggers import RisingEdge
        got = await self.drv.access(va, op, asid)
        want = self.arch.dev_access(va, op, asid)
        self.note(f"{AccessType(op).name} 0x{va:x} asid {asid} -> {got[0].name}")
        self.stats["access"] += 1
        gf, gp = got
        wf, wp = want
        if gf != wf or (wf == FaultKind.NONE and gp != wp):
            self.fail(f"{AccessType(op).name} 0x{va:x} asid {asid}: RTL {gf.name} 0x{gp:09x}, "
                      f"model {FaultKind(wf).name} 0x{wp:09x}")
        if wf == FaultKind.NONE:
            self.stats["hit"] += 1
        elif wf == FaultKind.PAGE:
            self.stats["page"] += 1
        if wf == FaultKind.MISS:
            self.stats["miss"] += 1
            await RisingEdge(self.drv.dut.clk)
            rec = self.drv.fault_record()
            model = self.arch.dev.fault
            if rec != (None if model is None else (model[0], model[1], AccessType(model[2]))):
                self.fail(f"fault record after the miss of 0x{va:x}: RTL {rec}, model {model}")
            if self.rng.random() < 0.7:         # else leave it pending: a second miss must
                await self.drv.ack_fault()      # not overwrite it
                self.arch.dev.ack_fault()
                if self.drv.fault_record() is not None:
                    self.fail("fault record still pending after its ack")
                if self.rng.random() < 0.8:     # the host resolves the fault
                    await self._fill(va, asid)

    def check_counters(self) -> None:
        got = self.drv.counters()
        want = dict(self.arch.dev.perf)
        for name in DEVICE_COUNTERS:
            if name in want and got[name] != want[name]:
                self.fail(f"dev perf counter {name}: RTL {got[name]}, model {want[name]}")
