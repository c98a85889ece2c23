"""The races: a few threads against one page, swept over their start offsets (one fresh
kernel per iteration on the same RTL, every TLB flushed); each catches quirks at cycle level.

``dirty_race``
    A CPU store whose walker sets D by CAS against reclaim's ``try_to_unmap`` (x86's
    ``ptep_get_and_clear`` is an xchg; the RTL's A/D updates are atomic).
``lockless_race``
    writeback's page_mkclean against a clear-then-set rewrite of the PTE under the PTE lock
    (Linux 479db0bf408e: ``page_check_address`` without the lock).
``zap_race``
    MADV_DONTNEED's zap against writeback and a CPU that keeps writing through its TLB
    (Linux 1cf35d47712d: the zap flushed after dropping the PTE lock; Linux 5df397dec7c4:
    the zap removed the rmap before its flush).
``release_race``
    exit's ``mmu_notifier_release`` against reclaim of a page the device TLB maps
    (Linux 3ad3d901bbcf: the notifier unlinked before ``->release``).
"""

from __future__ import annotations

import random

from cosim.scenarios import catches, scenario
from cosim.system import CosimViolation, Progress, RaceRun, bring_up
from pyrmap.checkers import InvariantViolation
from pyrmap.pte import PAGE_SIZE

#: name -> (race, PTE bits of the page at the start, sweep width in cycles)
RACES: dict = {}


@scenario("dirty_race", """a CPU store whose walker sets D by CAS against reclaim's
          try_to_unmap of the page, iterated over store timings (--steps iterations)""",
          env={"COSIM_STEPS": 48}, steps="iterations", quirks=(
              catches("nonatomic_ptep_get_and_clear", "kernel", checker="shadow",
                      needs={"svadu": True}),
              catches("quirk_plain_ad_write", "hdl", checker="shadow",
                      also=("frame", "scoreboard")),
              catches("quirk_fill_after_inval", "hdl", checker="tlb", also=("scoreboard",)),
              catches("quirk_ad_on_nonpresent", "hdl", checker="frame", also=("shadow",)),
              catches("quirk_walk_answer_after_inval", "hdl", checker="shadow")))
async def dirty_race_scenario(dut, seed: int, p: dict, progress: Progress, out: dict):
    """reclaim's ``try_to_unmap`` against a CPU store whose walk sets D by CAS in the RTL.

    A shared file page is mapped writable but clean and old, so the store's walker must
    compare-and-swap A and D into the PTE.  Each iteration (a fresh kernel on the same RTL,
    every TLB flushed) starts the store a different number of cycles after reclaim; reclaim
    unmaps the page, writes it back if it is dirty and drops it from the page cache; then the
    file's backing store must hold the store's value (checker (c)).  With
    ``nonatomic_ptep_get_and_clear`` the unmap is a load and a store of 0 a few cycles apart,
    and a walker CAS that lands between them is lost: the page is dropped unwritten."""
    from pyrmap.checkers import Checkers
    from pyrmap.filemap import write_one_page
    from pyrmap.kernel import Kernel, Quirks
    from pyrmap.mm_types import (PG, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ, VM_SHARED,
                                 VM_WRITE, AddressSpace, MmStruct, Vma)
    from pyrmap.pagemap import lock_page, unlock_page
    from pyrmap.pagetable import pgd_alloc, pte_alloc
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import PAGE_SHARED, AccessType, FaultKind, pfn_pte
    from pyrmap.rmap import SWAP_SUCCESS, page_add_file_rmap, try_to_unmap
    from pyrmap.vmscan import remove_mapping

    mem = PhysMem(max(p["nframes"], 16))
    env, arch, memory = await bring_up(dut, mem, seed, yield_cycles=(0, 3))
    run = out["system"] = RaceRun(arch, env, memory)
    iterations = p["steps"]
    va = 0x4000_0000
    progress(f"seed {seed}: up to {iterations} iterations of store-vs-try_to_unmap, quirks "
             f"{','.join(p['quirks']) or 'none'}")
    for it in range(iterations):
        mem.words[:] = 0
        quirks = Quirks(**{q: True for q in p["quirks"]})
        k = Kernel(arch, quirks)
        arch.kernel = k
        run.uninstall_last()
        chk = Checkers(k, seed=seed, command=p["command"]).install()
        chk.step(f"iteration {it}")
        run.next_iteration(k, chk)
        arch.access_checker = chk.tlb
        f = AddressSpace(k, "f", 1)
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
        # Iterations sweep the store's start from 24 cycles before reclaim to 23 after.
        delay = it % 48 - 24
        state = {}

        def setup():
            arch.flush_tlb_all()
            mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
            k.mms.append(mm)
            vma = Vma(mm, va, va + PAGE_SIZE, flags, 0, f)
            mm.mmap.append(vma)
            f.i_mmap.insert(0, 0, vma)
            page = k.alloc_page()
            page.mapping, page.index = f, 0
            page.set(PG.uptodate)
            f.page_tree[0] = page
            k.get_page(page)
            ptep = pte_alloc(mm, va)
            arch.set_pte_at(mm, va, ptep, pfn_pte(page.pfn, PAGE_SHARED))   # clean, old
            page_add_file_rmap(page)
            mm.file_rss += 1
            chk.shadow.register_file(f)
            chk.shadow.on_mmap(mm, va, PAGE_SIZE, 3, True, f, 0)
            arch.switch_mm(0, mm)
            state.update(mm=mm, page=page, ptep=ptep)

        arch.history_from_seq = len(memory.log)
        await env.run("setup", setup)
        mm, page = state["mm"], state["page"]
        value = 0x5EED_0000 + it

        def cpu():
            env.wait_cycles(max(delay, 0))
            r = arch.cpu_access(0, va, AccessType.STORE, data=value)
            if r.fault == FaultKind.NONE:
                chk.shadow.store(mm, va, value)

        def reclaim():
            env.wait_cycles(max(-delay, 0))
            k.get_page(page)
            lock_page(page)
            rc = try_to_unmap(page, 0)
            if rc == SWAP_SUCCESS and page.test(PG.dirty):
                write_one_page(page)
                lock_page(page)
            if rc == SWAP_SUCCESS:
                remove_mapping(page)
            unlock_page(page)
            k.put_page(page)

        threads = [env.spawn("cpu0", cpu), env.spawn("reclaim", reclaim)]
        try:
            for t in threads:
                await t.join()
        except InvariantViolation as exc:
            raise CosimViolation(f"at cycle {arch.cycle()} (iteration {it}, the store began "
                                 f"{delay} cycles after reclaim):\n{exc}")
        try:
            if 0 not in f.page_tree:
                chk.shadow.check_backing(f, [0])
            chk.check_all()
        except InvariantViolation as exc:
            hist = "\n".join(f"    {h}" for h in arch.pte_history(state["ptep"]))
            raise CosimViolation(f"at cycle {arch.cycle()} (iteration {it}, the store began "
                                 f"{delay} cycles after reclaim):\n{exc}\n  PTE history of "
                                 f"0x{va:x} (oldest first):\n{hist}")
        if it % 8 == 7:
            progress(f"iteration {it + 1}/{iterations}: cycle {arch.cycle()}, no lost write")
    return run


# --- quirk races (one page, swept over timings) --------------------------------------------

async def _race_scenario(dut, seed: int, p: dict, progress, out: dict, *, race: str):
    """Sweep one race over thread start offsets: iteration ``it`` starts the second thread
    ``it % width - width // 2`` cycles after the first (the seed shifts the sweep), each
    iteration on a fresh kernel; stops at the first violation."""
    from pyrmap.physmem import PhysMem
    from pyrmap.pte import _PAGE_A, _PAGE_D
    fn, bits, width = RACES[race]
    pte_bits = (_PAGE_A if "A" in bits else 0) | (_PAGE_D if "D" in bits else 0)
    mem = PhysMem(max(p["nframes"], 16))
    env, arch, memory = await bring_up(dut, mem, seed, yield_cycles=(0, 3))
    run = out["system"] = RaceRun(arch, env, memory)
    shift = random.Random(seed).randrange(width)
    progress(f"seed {seed}: up to {p['steps']} iterations of {race}, quirks "
             f"{','.join(p['quirks']) or 'none'}")
    for it in range(p["steps"]):
        delay = (it + shift) % width - width // 2
        state = {}

        def setup():
            rig = state["rig"] = _Rig(arch, seed, p, it, pte_bits)
            state["threads"], state["after"] = fn(rig, delay)

        run.uninstall_last()
        arch.history_from_seq = len(memory.log)
        where = f"iteration {it}, start offset {delay} cycles"
        try:
            await env.run("setup", setup)
            rig = state["rig"]
            run.next_iteration(rig.kernel, rig.chk)
            threads = [env.spawn(name, body) for name, body in state["threads"]]
            for t in threads:
                await t.join()
            if state["after"] is not None:
                await env.run("after", state["after"])
            rig.chk.check_all()
        except InvariantViolation as exc:
            hist = "\n".join(f"    {h}" for h in arch.pte_history(state["rig"].ptep))
            raise CosimViolation(f"at cycle {arch.cycle()} ({where}):\n{exc}\n  PTE history "
                                 f"of 0x{VA:x} (oldest first):\n{hist}")
        if it % 8 == 7:
            progress(f"iteration {it + 1}/{p['steps']}: cycle {arch.cycle()}, no violation")
    return run


def race(name: str, summary: str, *, bits: str, width: int = 32, quirks: tuple = ()):
    """Decorator: register ``fn(rig, delay) -> (threads, after)`` as scenario ``name``, swept
    over ``width`` start offsets on a page whose PTE starts with ``bits`` (``"AD"``, ``""``);
    ``--steps`` iterations (default ``width``: every offset once)."""
    def register(fn):
        RACES[name] = (fn, bits, width)

        async def run(dut, seed, p, progress, out):
            return await _race_scenario(dut, seed, p, progress, out, race=name)
        run.__name__ = f"{name}_scenario"
        run.__doc__ = fn.__doc__
        scenario(name, summary, env={"COSIM_STEPS": width}, steps="iterations",
                 quirks=quirks)(run)
        return fn
    return register


VA = 0x4000_0000
#: zap_race's sweep: the zap starts 16 cycles before writeback (5df397dec7c4's window:
#: writeback after the zap's page_remove_rmap) up to 47 cycles after it (1cf35d47712d's).
ZAP_WIDTH = 64


class _Rig:
    """One iteration of a race: a fresh kernel with the quirks, the checkers, one mm and
    one shared file page mapped writable at :data:`VA` (on the platform's arch and memory)."""

    def __init__(self, arch, seed: int, p: dict, it: int, pte_bits: int):
        from pyrmap.checkers import Checkers
        from pyrmap.kernel import Kernel, Quirks
        from pyrmap.mm_types import (PG, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_READ,
                                     VM_SHARED, VM_WRITE, AddressSpace, MmStruct, Vma)
        from pyrmap.pagetable import pgd_alloc, pte_alloc
        from pyrmap.pte import PAGE_SHARED, pfn_pte
        from pyrmap.rmap import page_add_file_rmap
        arch.mem.words[:] = 0
        self.arch = arch
        self.kernel = k = Kernel(arch, Quirks(**{q: True for q in p["quirks"]}))
        arch.kernel = k
        self.chk = chk = Checkers(k, seed=seed, command=p["command"]).install()
        chk.step(f"iteration {it}")
        arch.access_checker = chk.tlb
        if arch.device is not None:
            arch.device.checker = chk.tlb
        arch.flush_tlb_all()
        self.file = f = AddressSpace(k, "f", 1)
        flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE
        self.mm = mm = MmStruct(k, k.alloc_asid(), pgd_alloc(k))
        k.mms.append(mm)
        self.vma = Vma(mm, VA, VA + PAGE_SIZE, flags, 0, f)
        mm.mmap.append(self.vma)
        f.i_mmap.insert(0, 0, self.vma)
        self.page = page = k.alloc_page()
        page.mapping, page.index = f, 0
        page.set(PG.uptodate)
        f.page_tree[0] = page
        k.get_page(page)
        self.ptep = pte_alloc(mm, VA)
        arch.set_pte_at(mm, VA, self.ptep, pfn_pte(page.pfn, PAGE_SHARED | pte_bits))
        page_add_file_rmap(page)
        mm.file_rss += 1
        chk.shadow.register_file(f)
        chk.shadow.on_mmap(mm, VA, PAGE_SIZE, 3, True, f, 0)
        arch.switch_mm(0, mm)
        self.values = 0

    def store(self, core: int = 0, word: int = 0) -> bool:
        """One CPU store of a fresh value; False when it faults (the rig has no fault
        handler: a fault means the translation is gone, and nothing was stored)."""
        from pyrmap.pte import AccessType, FaultKind
        self.values += 1
        value = 0x5EED_0000 + self.values
        r = self.arch.cpu_access(core, VA + 8 * word, AccessType.STORE, data=value)
        if r.fault != FaultKind.NONE:
            return False
        self.chk.shadow.store(self.mm, VA + 8 * word, value)
        return True

    def writeback(self, after_cycles: int) -> None:
        """A writeback thread's body: wait ``after_cycles`` (none when negative), lock the
        page and write it back (``write_one_page``: page_mkclean, then the I/O)."""
        from pyrmap.filemap import write_one_page
        from pyrmap.pagemap import lock_page
        self.arch.env.wait_cycles(max(after_cycles, 0))
        lock_page(self.page)
        write_one_page(self.page)

    def check_backing_if_clean(self) -> None:
        """After the run: a page the writeback left clean has every store on its backing."""
        from pyrmap.mm_types import PG
        if not self.page.test(PG.dirty):
            self.chk.shadow.check_backing(self.file, [0])

    def msync(self) -> None:
        """Fault a last store in, write the file back; the backing store must hold it all."""
        from pyrmap.filemap import do_writepages
        from pyrmap.workload import CpuWorkload
        CpuWorkload(self.kernel, 0, self.mm, [("store", VA + 8)], checkers=self.chk,
                    value_base=0x7777_0000).run()
        do_writepages(self.file)
        self.chk.shadow.check_backing(self.file, [0])


@race("lockless_race", "page_mkclean vs a clear-then-set PTE rewrite under its lock, swept "
      "over start offsets", bits="AD",
      quirks=(catches("page_check_address_lockless", "kernel", checker="tlb",
                      also=("shadow",)),))
def _lockless_race(rig: _Rig, delay: int):
    """479db0bf408e: a clear-then-set rewrite of the live PTE under its lock, against
    writeback's page_mkclean.  With ``page_check_address_lockless`` page_mkclean peeks at the
    PTE without the lock, sees it none in the window, and skips it: the page is written back
    and marked clean while core0 still holds a writable, dirty TLB entry."""
    from pyrmap.mm_types import PG
    env = rig.arch.env
    assert rig.store(), "the first store faulted"
    rig.page.set(PG.dirty)

    def rewriter():
        env.wait_cycles(max(-delay, 0))
        with rig.mm.page_table_lock:
            old = rig.arch.ptep_get_and_clear(rig.mm, VA, rig.ptep)
            env.wait_cycles(12)
            rig.arch.set_pte_at(rig.mm, VA, rig.ptep, old)

    return [("rewriter", rewriter), ("writeback", lambda: rig.writeback(delay))], rig.msync


@race("zap_race", "MADV_DONTNEED's zap vs writeback vs a CPU writing through its TLB, swept "
      "over start offsets", bits="AD", width=ZAP_WIDTH,
      quirks=(catches("zap_flush_after_pte_unlock", "kernel", checker="tlb",
                      also=("shadow",)),
              catches("zap_rmap_before_flush", "kernel", checker="tlb",
                      also=("shadow",))))
def _zap_race(rig: _Rig, delay: int):
    """MADV_DONTNEED's zap against writeback while core0 keeps writing through its TLB
    entry; the zap starts ``delay`` + 16 cycles after writeback (before it, for the
    offsets where that is negative).  Fixed, the zap flushes before dropping the PTE lock
    and removes the rmap only after the flush, so page_mkclean either waits for the PTE lock
    or finds the page unmapped and no TLB entry left.

    * 1cf35d47712d, ``zap_flush_after_pte_unlock``: writeback is inside page_mkclean's rmap
      walk when the zap clears the dirty PTE; page_mkclean gets the PTE lock between the
      unlock and the flush, finds no PTE, the page is cleaned and written back, and core0's
      next store lands through the still-valid entry, dirty nowhere.
    * 5df397dec7c4, ``zap_rmap_before_flush``: writeback starts after the zap's
      page_remove_rmap and before its flush: page_mkclean sees an unmapped page and returns
      at once, so writeback cleans the page while core0 still writes through its entry."""
    from pyrmap.mm_types import PG
    env = rig.arch.env
    assert rig.store(), "the first store faulted"
    rig.page.set(PG.dirty)
    lead = delay + 16

    def cpu():
        for _ in range(40):
            if not rig.store(word=2):
                break                   # the translation is gone: nothing more to write
            env.wait_cycles(2)

    def zap():
        from pyrmap.memory import zap_page_range
        env.wait_cycles(max(lead, 0))
        rig.mm.mmap_sem.down_read()
        try:
            zap_page_range(rig.vma, VA, PAGE_SIZE)
        finally:
            rig.mm.mmap_sem.up_read()

    def writeback():
        rig.writeback(-lead)

    return [("cpu0", cpu), ("writeback", writeback), ("zap", zap)], rig.check_backing_if_clean


@race("mkclean_race", "a store whose walk is in flight across page_mkclean's write-protect "
      "and flush, then more stores, swept over start offsets", bits="AD",
      quirks=(catches("quirk_inval_clear_late", "hdl", checker="tlb",
                      also=("scoreboard", "shadow")),))
def _mkclean_race(rig: _Rig, delay: int):
    """A store whose walk is in flight while writeback's page_mkclean write-protects the
    page and flushes, then more stores.  Kept, the invalidation guarantee drops the walk's
    fill (the store is answered from a new walk, which faults) and every later store faults.
    Hardware that keeps a writable entry past the acknowledgement (``quirk_inval_clear_late``)
    lets a store accepted in the acknowledgement's cycle complete through it after
    page_mkclean: caught at that store by checker (a) (the access began after the flush was
    acknowledged), and at the end of the run by the scoreboard's stale hit."""
    from pyrmap.mm_types import PG
    env = rig.arch.env
    rig.page.set(PG.dirty)

    def cpu():
        env.wait_cycles(max(delay, 0))
        for _ in range(4):
            if not rig.store(word=1):
                break                   # write-protected: the translation is gone
            env.wait_cycles(1)

    def writeback():
        rig.writeback(-delay)

    return [("cpu0", cpu), ("writeback", writeback)], rig.check_backing_if_clean


@race("release_race", "exit's mmu_notifier_release vs reclaim of a page the device TLB maps, "
      "swept over start offsets", bits="",
      quirks=(catches("notifier_release_unlink_first", "kernel", checker="tlb",
                      also=("frame",)),))
def _release_race(rig: _Rig, delay: int):
    """3ad3d901bbcf: exit's mmu_notifier_release against reclaim of a page the device TLB
    maps.  With ``notifier_release_unlink_first`` the notifier is unlinked before its
    ``->release`` ran: reclaim's try_to_unmap calls no invalidate, frees the frame, and the
    device TLB still reaches it (checker (b))."""
    from pyrmap.pagemap import lock_page, unlock_page
    env = rig.arch.env
    k, page = rig.kernel, rig.page
    sec = rig.chk.add_secondary(rig.mm)
    if not sec.fault(VA):
        raise RuntimeError("the device could not map the page")

    def exiting():
        from pyrmap.mmu_notifier import mmu_notifier_release
        env.wait_cycles(max(-delay, 0))
        mmu_notifier_release(rig.mm)

    def reclaim():
        from pyrmap.rmap import SWAP_SUCCESS, try_to_unmap
        from pyrmap.vmscan import remove_mapping
        env.wait_cycles(max(delay, 0))
        k.get_page(page)
        lock_page(page)
        if try_to_unmap(page, 0) == SWAP_SUCCESS:
            remove_mapping(page)
        unlock_page(page)
        k.put_page(page)

    return [("exit", exiting), ("reclaim", reclaim)], None
