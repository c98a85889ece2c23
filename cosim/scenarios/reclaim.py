"""The system scenarios: ``reclaim`` (what ``rmap-cosim demo`` runs) and ``fuzz``
(pyrmap's random program), each a :class:`cosim.system.CosimSystem` with every checker on."""

from __future__ import annotations

import random

from cosim.scenarios import catches, scenario
from cosim.system import CosimSystem, Progress, system_for
from pyrmap.pte import PAGE_SIZE
from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE


@scenario("reclaim", """fork-shared anonymous pages and shared/private file mappings under
          memory pressure: workloads on every core through the RTL TLBs, kswapd (aging,
          try_to_unmap, swap), writeback (page_mkclean) and migration next to them, and a
          device (secondary MMU, mmu notifiers) on the parent's memory""")
async def reclaim_scenario(dut, seed: int, p: dict, progress: Progress,
                           out: dict) -> CosimSystem:
    """Processes sharing anonymous pages through fork and file pages through shared
    mappings; workloads on every core through the RTL; kswapd under memory pressure,
    writeback and migration next to them; a device (a DeviceMmuDriver registered on the
    parent's mm, its workload on dev__req, shadow-checked) accessing the parent's pages at
    the same time; every checker on, all the time."""
    s = out["system"] = await system_for(dut, seed, p)
    arch = s.arch
    rng = random.Random(seed)
    ncores = arch.ncores
    progress(f"seed {seed}: {p['nframes']} frames, {ncores} cores, "
             f"quirks {','.join(p['quirks']) or 'none'}; RTL TLB state "
             f"{'read from the RTL' if arch.reads_rtl_tlbs else 'from fills'}")
    rw = PROT_READ | PROT_WRITE

    def setup():
        f = s.create_file("data.bin", 8)
        parent = s.new_process()
        anon = s.mmap(parent, 0, 6 * PAGE_SIZE, rw, MAP_PRIVATE | MAP_ANONYMOUS)
        fsh = s.mmap(parent, 0, 8 * PAGE_SIZE, rw, MAP_SHARED, file=f)
        drv = None
        if dev_arch is not None:
            from pyrmap.devdriver import register_device
            drv = register_device(parent, checkers=s.checkers, dev=dev_arch, name="dev0")
        return f, parent, anon, fsh, drv

    # The device (secondary MMU): a DeviceMmuDriver registered on the parent's mm, its
    # workload on the RTL's dev__req port next to the CPUs, kswapd, writeback and migration.
    dev_arch = arch.device
    s.checkers.step("setup")
    f, parent, anon, fsh, drv = await s.call("setup", setup)
    dev = None
    if drv is not None:
        from cosim.device import DeviceRequester
        dev = s.device_driver = DeviceRequester(dev_arch, drv, shadow=s.shadow)
        dev_rng = random.Random(seed * 7919 + 17)
        dev_count = max(8, p["accesses"] // 6)
    s.workload(0, parent, [("store", anon + i * PAGE_SIZE) for i in range(6)] +
               [("store", fsh + i * PAGE_SIZE) for i in range(0, 8, 2)])
    s.spawn("touch", s.workloads[-1].run, mm=parent)
    await s.run_async()

    def fork_and_map():
        c1 = s.fork(parent)
        c2 = s.fork(parent)
        f1 = s.mmap(c1, 0, 4 * PAGE_SIZE, rw, MAP_SHARED, file=f, pgoff=4)
        f2 = s.mmap(c2, 0, 3 * PAGE_SIZE, rw, MAP_PRIVATE, file=f, pgoff=2)
        return c1, c2, f1, f2

    s.checkers.step("fork")
    c1, c2, f1, f2 = await s.call("fork", fork_and_map)
    procs = [parent, c1, c2]
    fmaps = [(parent, fsh, 8 * PAGE_SIZE), (c1, f1, 4 * PAGE_SIZE)]
    progress("3 processes (fork shares 6 anonymous pages), a file of 8 pages mapped shared "
             "by 2 and privately by 1")
    for phase in range(p["phases"]):
        s.checkers.step(f"phase {phase}")
        for core in range(ncores):
            mm = procs[(phase + core) % len(procs)]
            s.random_workload(core, mm, p["accesses"], store_ratio=0.5,
                              rng=random.Random(rng.randrange(1 << 30)))

        def kswapd():
            from pyrmap.vmscan import balance
            for _ in range(8):
                balance(s.kernel, 8, 14)
                arch.env.wait_cycles(arch.env.rng.randint(50, 150))   # kswapd sleeps

        def writeback(phase=phase):
            mm, addr, length = fmaps[phase % len(fmaps)]
            s.msync(mm, addr, length, check_backing=False)

        def migration():
            pages = s.mapped_user_pages()
            if pages:
                s.migrate(rng.choice(pages))

        s.spawn("kswapd", kswapd)
        s.spawn("writeback", writeback)
        s.spawn("migration", migration)
        if dev is None:
            await s.run_async()
        else:
            await _run_with_device(s, dev, parent, dev_count,
                                   random.Random(dev_rng.randrange(1 << 30)))
        k = s.kernel
        progress(f"phase {phase + 1}/{p['phases']}: cycle {arch.cycle()}, "
                 f"free frames {k.frames.nr_free}, swapped out {k.stats['pswpout']}, "
                 f"written {k.stats['pages_written']}, migrated {k.stats['migrate_success']}, "
                 f"accesses {s.shadow.loads + s.shadow.stores}"
                 + (f", device accesses {dev.stats['accesses']}" if dev is not None else ""))

    def finish():
        for mm, addr, length in fmaps:
            s.msync(mm, addr, length)
        for mm in list(procs):
            s.exit(mm)
    s.checkers.step("final msync and exit")
    await s.call("exit", finish)
    s.checkers.check_all()
    return s


async def _run_with_device(s: CosimSystem, dev, mm, count: int, rng: random.Random) -> None:
    """Every queued host thread with ``count`` random device accesses (the device's own words
    of each page of ``mm``, checked against the shadow) on dev__req at the same time; then
    the quiescent checks and the device's own: every device TLB entry backed by its PTE."""
    from pyrmap.scenario import _offset
    from pyrmap.workload import random_accesses
    accesses = list(_offset(random_accesses(rng, lambda: s.shadow.regions(mm), count,
                                            store_ratio=0.4, words=2),
                            s.agent_offset(mm, s.arch.ncores)))
    await s.run_with_device(dev, accesses, mm)


@scenario("fuzz", """pyrmap's random program on the RTL: seeded mmap / munmap / mprotect /
          mremap / fork / exit / madvise / msync / reclaim / migration / remap_file_pages
          steps, each next to workloads on the cores, quiescent checks after every step""",
          env={"COSIM_NFRAMES": 64}, steps="random steps",
          quirks=(catches("split_vma_keeps_pgoff", "kernel", seed=5, checker="rmap",
                          also=("shadow",)),))
async def fuzz_scenario(dut, seed: int, p: dict, progress: Progress,
                        out: dict) -> CosimSystem:
    """``pyrmap.scenario.random_program`` on the RTL: seeded random mm operations (mmap anon /
    file, private / shared, munmap, mprotect, mremap, fork, exit, madvise, msync, reclaim,
    migration, remap_file_pages), each run as a host thread next to workloads on the cores
    and kswapd, with the quiescent checks after every step."""
    return await random_program_on_rtl(dut, seed, p, progress, out)


async def random_program_on_rtl(dut, seed: int, p: dict, progress: Progress, out: dict,
                                ops=None) -> CosimSystem:
    """:func:`pyrmap.scenario.random_program` as a host thread on a fresh system (``ops``:
    the operations it draws from, None for the default ones)."""
    from pyrmap.scenario import random_program
    s = out["system"] = await system_for(dut, seed, p, windows=True)
    progress(f"seed {seed}: {p['nframes']} frames, {s.arch.ncores} cores, {p['steps']} random "
             f"steps, quirks {','.join(p['quirks']) or 'none'}")

    def on_step(step, name):
        if step % 4 == 0 or step == p["steps"] - 1:
            progress(f"step {step + 1}/{p['steps']}: {name} (cycle {s.arch.cycle()}, "
                     f"accesses {s.shadow.loads + s.shadow.stores})")

    await s.call("program", random_program, s, p["steps"], rng=random.Random(seed),
                 on_step=on_step, ops=list(ops) if ops else None)
    s.checkers.check_all()
    return s
