"""The DeviceMmu (secondary MMU) ports compared with SoftArch's device model.

:class:`DeviceChecker` drives the ports through :class:`cosim.device.DeviceDriver`, performs the same
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

from ..device import DeviceDriver
from ..memory import cycle_now
from ..scoreboard import Violation
from .tables import sign_extend_va

__all__ = ["DeviceChecker"]


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
                self.arch.dev_ack_fault()
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
