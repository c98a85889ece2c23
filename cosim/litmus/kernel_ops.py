"""Kernel operations in litmus tests: pyrmap's engine on the RTL, through CosimArch.

When a test uses a kernel operation (``page_mkclean x``, ``try_to_unmap x``, ...) or a CPU
access with ``retry`` (fault handling), the bench builds a :class:`KernelWorld` over the run's
memory before the threads start:

* a :class:`pyrmap.kernel.Kernel` on a :class:`cosim.arch.CosimArch` (PTE atomics at clock
  edges between the walkers' memory transactions, flushes through the invalidation ports),
  with host threads from a :class:`cosim.host.HostEnv`;
* one :class:`~pyrmap.mm_types.MmStruct` (ASID 1, root frame 1: the bench's page tables),
  active on every core;
* one shared file mapping covering every virtual page of the test (page ``i`` at file offset
  ``i``), whose page cache holds each physical page the init section maps (so rmap reaches
  it: ``page->mapping``, ``page->index``, ``_mapcount``), and the other named pages as free
  standing pages (e.g. a remap target);
* a notifier on the mm that invalidates the device TLB for every range the engine invalidates
  (the secondary MMU's driver), when the test has a device thread.

Each kernel operation then runs as one host thread and its result goes into the register.
"""

from __future__ import annotations

from pyrmap.pte import PAGE_SIZE, AccessType, FaultKind, pte_pfn

__all__ = ["KernelWorld", "run_kernel_op", "needs_kernel", "KernelSetupError"]


class KernelSetupError(RuntimeError):
    """The test's initial state cannot be described to the kernel."""


def needs_kernel(test) -> bool:
    """True when a thread uses a kernel operation or a CPU access with ``retry``."""
    if test.options.get("kernel"):
        return True
    for th in test.threads:
        for op in th.ops:
            if op.kind == "if":
                op = op.args["then"]
            if op.kind == "kernel" or op.args.get("retry"):
                return True
    return False


class _DeviceNotifier:
    """The secondary MMU's notifier: zaps the device TLB over every invalidated range."""

    def __new__(cls, world):
        from pyrmap.mmu_notifier import MmuNotifier

        class DeviceNotifier(MmuNotifier):
            def _zap(self, start, end):
                from pyrmap.arch import InvalKind
                va = start & ~(PAGE_SIZE - 1)
                while va < end:
                    world.env.call(world.run.inval_port, "dev", InvalKind.VA_ASID, va)
                    va += PAGE_SIZE

            def invalidate_page(self, mm, address):
                self._zap(address, address + PAGE_SIZE)

            def invalidate_range_start(self, mm, start, end):
                self._zap(start, end)

        return DeviceNotifier()


class KernelWorld:
    """The engine's view of one run (see the module docstring)."""

    def __init__(self, run, seed: int):
        from pyrmap.kernel import Kernel
        from pyrmap.mm_types import (PG, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ,
                                     VM_SHARED, VM_WRITE, AddressSpace, MmStruct, Vma)
        from pyrmap.rmap import page_add_file_rmap
        from pyrmap.vmscan import lru_cache_add

        from ..arch import CosimArch
        from ..host import HostEnv
        from .bench import ASID, ROOT

        self.run = run
        b = run.b
        lay = run.lay
        test = run.test
        self.env = HostEnv(b.dut.clk, seed, yield_cycles=(0, 2))
        self.arch = arch = CosimArch(b.dut, run.mem, self.env, ncores=b.ncores,
                                     asid_bits=b.asid_bits, memory=b.responder,
                                     tlb_entries=int(b.cfg.get("tlb_entries", 8)),
                                     sp_entries=int(b.cfg.get("superpage_entries", 4)),
                                     dev_entries=int(b.cfg.get("dev_entries", 8)))
        for i in range(b.ncores):       # one owner per invalidation port
            run.inval_locks[i] = arch._inval_locks[i]
        from pyrmap.kernel import Quirks
        self.kernel = k = Kernel(arch, Quirks(**{q: True for q in run.kernel_quirks}))
        arch.kernel = k
        for _ in range(1, lay.nframes):         # the bench's frames are in use
            k.frames.alloc()
        from .bench import L0, L1
        for pfn in (ROOT, L1, L0):              # the bench's page tables, as pgd/pte_alloc
            table = k.pages[pfn]
            table.flags = PG(0)
            table.set(PG.pagetable)
            table._count = 1
        self.mm = mm = MmStruct(k, ASID, ROOT)
        k.mms.append(mm)
        for core in range(b.ncores):
            arch.switch_mm(core, mm)
        nvas = len(lay.vas)
        self.file = f = AddressSpace(k, "litmus", max(nvas, 1))
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
        base = min(lay.vas.values())
        self.vma = vma = Vma(mm, base, base + nvas * PAGE_SIZE, flags, 0, f)
        mm.mmap.append(vma)
        f.i_mmap.insert(0, max(nvas - 1, 0), vma)
        self.pages = {}
        mapped = {}
        for i, (va, spec) in enumerate(test.init.maps.items()):
            if spec.page is not None and spec.bits & 1:
                if spec.page in mapped:
                    raise KernelSetupError(
                        f"kernel operations need each physical page mapped once; "
                        f"{spec.page!r} is mapped by {mapped[spec.page]!r} and {va!r}")
                mapped[spec.page] = va
        for name, pfn in lay.pfns.items():
            page = k.pages[pfn]
            page.flags = PG(0)
            page.set(PG.uptodate)
            page._count = 1
            self.pages[name] = page
            if name in mapped:
                idx = list(lay.vas).index(mapped[name])
                page.mapping, page.index = f, idx
                f.page_tree[idx] = page
                k.get_page(page)
                page_add_file_rmap(page)
                mm.file_rss += 1
                lru_cache_add(page)
        self.notifier = None

    async def setup(self) -> None:
        """Register the device notifier (takes every mm lock: a host thread)."""
        if not any(th.kind == "dev" for th in self.run.test.threads):
            return
        from pyrmap.mmu_notifier import mmu_notifier_register
        self.notifier = _DeviceNotifier(self)
        rc = await self.env.run("litmus:notifier", mmu_notifier_register, self.notifier, self.mm)
        if rc:
            raise KernelSetupError(f"mmu_notifier_register returned {rc}")

    def page_of(self, va: str):
        """The page PTE(va) maps now, else the page the init section mapped there."""
        pte = self.run.mem.read(self.run.lay.ptep(va))
        if pte & 1:
            return self.kernel.pages[pte_pfn(pte)]
        spec = self.run.test.init.maps[va]
        if spec.page is None:
            raise KernelSetupError(f"{va!r} maps no page")
        return self.pages[spec.page]

    # --- operations (host-thread bodies) -------------------------------------------------------

    def call(self, fn: str, va: str):
        from pyrmap import mmu_notifier as mn
        from pyrmap import pgtable_generic as pg
        from pyrmap import rmap
        from pyrmap.pagemap import lock_page, unlock_page
        addr = self.run.lay.vas[va]
        ptep = self.run.lay.ptep(va)
        vma, mm = self.vma, self.mm
        if fn == "ptep_clear_flush":
            return pg.ptep_clear_flush(vma, addr, ptep)
        if fn == "ptep_clear_flush_young":
            return pg.ptep_clear_flush_young(vma, addr, ptep)
        if fn == "ptep_test_and_clear_young":
            return pg.ptep_test_and_clear_young(vma, addr, ptep)
        if fn == "ptep_set_wrprotect":
            return pg.ptep_set_wrprotect(mm, addr, ptep)
        if fn == "flush_tlb_page":
            return self.arch.flush_tlb_page(vma, addr)
        if fn == "invalidate_range_start":
            return mn.mmu_notifier_invalidate_range_start(mm, addr, addr + PAGE_SIZE)
        if fn == "invalidate_range_end":
            return mn.mmu_notifier_invalidate_range_end(mm, addr, addr + PAGE_SIZE)
        page = self.page_of(va)
        if fn == "page_referenced":
            return rmap.page_referenced(page, 0, None)
        if fn in ("page_mkclean", "try_to_unmap", "migrate"):
            if fn == "migrate":
                from pyrmap.migrate import migrate_pages
                return migrate_pages(self.kernel, [page])
            lock_page(page)
            try:
                if fn == "page_mkclean":
                    return rmap.page_mkclean(page)
                return rmap.try_to_unmap(page, 0)
            finally:
                unlock_page(page)
        if fn in ("mprotect_ro", "mprotect_rw", "mprotect_none"):
            from pyrmap.mmap import mprotect
            prot = {"mprotect_ro": 1, "mprotect_rw": 3, "mprotect_none": 0}[fn]
            return mprotect(mm, addr, PAGE_SIZE, prot)
        if fn == "munmap":
            from pyrmap.mmap import do_munmap
            return do_munmap(mm, addr, PAGE_SIZE)
        raise KernelSetupError(f"unknown kernel operation {fn!r}")

    def fault(self, va: int, store: bool) -> int:
        from pyrmap.memory import do_page_fault
        return do_page_fault(self.mm, va, AccessType.STORE if store else AccessType.LOAD)


async def run_kernel_op(run, th, op, who: str) -> None:
    """Run kernel operation ``op`` of thread ``th`` as a host thread; store its result."""
    world = run.kworld
    if world is None:
        from .bench import RunError
        raise RunError("kernel operation without a kernel world")
    res = await world.env.run(f"{th.name}:{op.args['fn']}", world.call, op.args["fn"], op.va)
    if op.dst:
        run.regs[op.dst] = int(res or 0)
