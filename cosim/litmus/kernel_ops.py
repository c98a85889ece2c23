"""Kernel operations in litmus tests: pyrmap's engine on the RTL, through CosimArch.

When a test uses a kernel operation (``page_mkclean x``, ``try_to_unmap x``, ...) or a CPU
access with ``retry`` (fault handling), the bench builds a :class:`KernelWorld` over the run's
memory before the threads start:

* a :class:`pyrmap.kernel.Kernel` on a :class:`cosim.arch.CosimArch` (PTE atomics at clock
  edges between the walkers' memory transactions, flushes through the invalidation ports),
  with host threads from a :class:`cosim.host.HostEnv`;
* one :class:`~pyrmap.mm_types.MmStruct` (ASID 1, root frame 1: the bench's page tables),
  active on every core;
* one mapping covering every virtual page of the test: by default a shared file mapping
  (page ``i`` at file offset ``i``) whose page cache holds each physical page the init
  section maps (so rmap reaches it: ``page->mapping``, ``page->index``, ``_mapcount``; a
  page mapped writable is dirty, as dirty accounting makes it); with ``option mapping=anon``
  a private anonymous mapping whose pages are anonymous pages of its anon_vma (for fork's
  copy-on-write); the other named pages are free standing pages (e.g. a remap target);
* a notifier on the mm that invalidates the device TLB for every range the engine invalidates
  (the secondary MMU's driver), when the test has a device thread.

Each kernel operation then runs as one host thread and its result goes into the register.
The operations are the kernel entries of the registry (:data:`cosim.litmus.ops.OPS`); their
bodies are the functions below, ``body(world, op) -> int``.
"""

from __future__ import annotations

from pyrmap.pte import _PAGE_W, PAGE_SIZE, AccessType, FaultKind, pte_pfn

__all__ = ["KernelWorld", "run_kernel_op", "needs_kernel", "KernelSetupError"]


class KernelSetupError(RuntimeError):
    """The test's initial state cannot be described to the kernel."""


def needs_kernel(test) -> bool:
    """True when a thread uses a kernel operation or a CPU access with ``retry``."""
    from .ops import lookup
    if test.options.get("kernel"):
        return True
    for th in test.threads:
        for op in th.ops:
            if op.kind == "if":
                op = op.args["then"]
            spec = lookup(op.kind)
            if (spec is not None and spec.kernel) or op.args.get("retry"):
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
                                     dev_entries=int(b.cfg.get("dev_entries", 8)),
                                     svadu=bool(b.cfg.get("svadu", True)),
                                     mmu=b.cfg.get("mmu", "ours"))
        arch.scoreboard = run.scoreboard    # the kernel's shootdowns feed the run's scoreboard
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
        base = min(lay.vas.values())
        #: Children made by ``fork`` and not yet exited (``exit`` takes the last one).
        self.children: list = []
        self.anon = test.options.get("mapping") == "anon"
        mapped = {}
        for va, spec in test.init.maps.items():
            if spec.page is not None and spec.bits & 1:
                if spec.page in mapped:
                    raise KernelSetupError(
                        f"kernel operations need each physical page mapped once; "
                        f"{spec.page!r} is mapped by {mapped[spec.page]!r} and {va!r}")
                mapped[spec.page] = va
        if self.anon:
            # A private anonymous mapping: every mapped page is an anonymous page of it.
            from pyrmap.mm_types import AnonVma
            from pyrmap.rmap import page_add_new_anon_rmap
            self.file = None
            flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
            self.vma = vma = Vma(mm, base, base + nvas * PAGE_SIZE, flags, 0, None)
            vma.anon_vma = AnonVma(k)
            vma.anon_vma.head.append(vma)
            mm.mmap.append(vma)
        else:
            self.file = f = AddressSpace(k, "litmus", max(nvas, 1))
            flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
            self.vma = vma = Vma(mm, base, base + nvas * PAGE_SIZE, flags, 0, f)
            mm.mmap.append(vma)
            f.i_mmap.insert(0, max(nvas - 1, 0), vma)
        self.pages = {}
        for name, pfn in lay.pfns.items():
            page = k.pages[pfn]
            page.flags = PG(0)
            page.set(PG.uptodate)
            page._count = 1
            self.pages[name] = page
            if name not in mapped:
                continue
            if self.anon:
                page_add_new_anon_rmap(page, vma, lay.vas[mapped[name]])
                mm.anon_rss += 1
            else:
                # Dirty accounting: a shared file page is mapped writable only after the
                # write fault that dirtied it, so a writable PTE means PageDirty.
                if test.init.maps[mapped[name]].bits & _PAGE_W:
                    page.set(PG.dirty)
                idx = self.pgoff(mapped[name])
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

    def page_dirty(self, name: str) -> bool:
        """PageDirty of physical page ``name`` (the kernel's record of a write not yet
        written back)."""
        from pyrmap.mm_types import PG
        return bool(self.pages[name].flags & PG.dirty)

    def addr(self, va: str) -> int:
        return self.run.lay.vas[va]

    def pgoff(self, va: str) -> int:
        """The file offset (in pages) of virtual page ``va``: its place in the layout."""
        return list(self.run.lay.vas).index(va)

    def vma_of(self, va: str):
        """The VMA that covers ``va`` now (mremap and munmap split the first one)."""
        vma = self.mm.find_vma(self.addr(va))
        if vma is None or vma.vm_start > self.addr(va):
            return self.vma
        return vma

    def ptep(self, va: str) -> int:
        return self.run.lay.ptep(va)

    def fault(self, va: int, store: bool) -> int:
        from pyrmap.memory import do_page_fault
        return do_page_fault(self.mm, va, AccessType.STORE if store else AccessType.LOAD)


# --- operation bodies: body(world, op) -> int, run as a host thread ------------------------------
# The registry (cosim.litmus.ops.OPS) names each one; syscalls answer 0 or -errno.

def _errno(call, *args) -> int:
    from pyrmap.errors import MmError
    try:
        return int(call(*args) or 0)
    except MmError as exc:
        return -exc.errno


def ptep_clear_flush(w, op):
    from pyrmap import pgtable_generic as pg
    return pg.ptep_clear_flush(w.vma_of(op.va), w.addr(op.va), w.ptep(op.va))


def ptep_clear_flush_young(w, op):
    from pyrmap import pgtable_generic as pg
    return pg.ptep_clear_flush_young(w.vma_of(op.va), w.addr(op.va), w.ptep(op.va))


def ptep_test_and_clear_young(w, op):
    from pyrmap import pgtable_generic as pg
    return pg.ptep_test_and_clear_young(w.vma_of(op.va), w.addr(op.va), w.ptep(op.va))


def ptep_set_wrprotect(w, op):
    from pyrmap import pgtable_generic as pg
    return pg.ptep_set_wrprotect(w.mm, w.addr(op.va), w.ptep(op.va))


def flush_tlb_page(w, op):
    return w.arch.flush_tlb_page(w.vma_of(op.va), w.addr(op.va))


def invalidate_range_start(w, op):
    from pyrmap import mmu_notifier as mn
    a = w.addr(op.va)
    return mn.mmu_notifier_invalidate_range_start(w.mm, a, a + PAGE_SIZE)


def invalidate_range_end(w, op):
    from pyrmap import mmu_notifier as mn
    a = w.addr(op.va)
    return mn.mmu_notifier_invalidate_range_end(w.mm, a, a + PAGE_SIZE)


def page_referenced(w, op):
    from pyrmap import rmap
    return rmap.page_referenced(w.page_of(op.va), 0, None)


def _locked(w, op, fn):
    from pyrmap.pagemap import lock_page, unlock_page
    page = w.page_of(op.va)
    lock_page(page)
    try:
        return fn(page)
    finally:
        unlock_page(page)


def page_mkclean(w, op):
    from pyrmap import rmap
    return _locked(w, op, rmap.page_mkclean)


def try_to_unmap(w, op):
    from pyrmap import rmap
    return _locked(w, op, lambda page: rmap.try_to_unmap(page, 0))


def migrate(w, op):
    from pyrmap.migrate import migrate_pages
    return migrate_pages(w.kernel, [w.page_of(op.va)])


def _mprotect(prot):
    def body(w, op):
        from pyrmap.mmap import mprotect
        return _errno(mprotect, w.mm, w.addr(op.va), PAGE_SIZE, prot)
    return body


mprotect_ro = _mprotect(1)
mprotect_rw = _mprotect(3)
mprotect_none = _mprotect(0)


def munmap(w, op):
    from pyrmap.mmap import do_munmap
    return _errno(do_munmap, w.mm, w.addr(op.va), PAGE_SIZE)


def mremap(w, op):
    from pyrmap.mmap import MREMAP_FIXED, MREMAP_MAYMOVE
    from pyrmap.mmap import mremap as sys_mremap
    rc = _errno(sys_mremap, w.mm, w.addr(op.va), PAGE_SIZE, PAGE_SIZE,
                MREMAP_MAYMOVE | MREMAP_FIXED, w.addr(op.args["to"]))
    return 0 if rc == w.addr(op.args["to"]) else rc


def madvise(w, op):
    from pyrmap.mmap import MADV_DONTNEED
    from pyrmap.mmap import madvise as sys_madvise
    return _errno(sys_madvise, w.mm, w.addr(op.va), PAGE_SIZE, MADV_DONTNEED)


def truncate(w, op):
    from pyrmap.filemap import vmtruncate
    if w.file is None:
        raise KernelSetupError("truncate needs the file mapping (not 'option mapping=anon')")
    return vmtruncate(w.file, w.pgoff(op.va) * PAGE_SIZE)


def msync(w, op):
    from pyrmap.filemap import msync as sys_msync
    return _errno(sys_msync, w.mm, w.addr(op.va), PAGE_SIZE)


def mlock(w, op):
    from pyrmap.mmap import mlock as sys_mlock
    return _errno(sys_mlock, w.mm, w.addr(op.va), PAGE_SIZE)


def munlock(w, op):
    from pyrmap.mmap import munlock as sys_munlock
    return _errno(sys_munlock, w.mm, w.addr(op.va), PAGE_SIZE)


def remap_file_pages(w, op):
    from pyrmap.fremap import sys_remap_file_pages
    return _errno(sys_remap_file_pages, w.mm, w.addr(op.va), PAGE_SIZE, 0,
                  w.pgoff(op.args["to"]), 0)


def fork(w, op):
    from pyrmap.mmap import dup_mm
    w.children.append(dup_mm(w.mm))
    return 0


def exit_child(w, op):
    from pyrmap.mmap import mmput
    if not w.children:
        raise KernelSetupError("exit: no child made by 'fork' is alive")
    mmput(w.children.pop())
    return 0


async def run_kernel_op(run, th, op, body) -> None:
    """Run kernel operation ``op`` of thread ``th`` (its registry ``body``) as a host thread;
    store its result in the operation's register."""
    world = run.kworld
    if world is None:
        from .bench import RunError
        raise RunError("kernel operation without a kernel world")
    res = await world.env.run(f"{th.name}:{op.kind}", body, world, op)
    run.put(op, int(res or 0))
