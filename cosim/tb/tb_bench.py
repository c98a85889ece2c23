"""cocotb modules of the benchmark (:mod:`cosim.bench`) and of the clear-flush-young comparison
(:mod:`cosim.cfy`).  Each test writes its figures as JSON to ``COSIM_REPORT``.

``test_plain_driver``
    A plain driver: one coroutine awaits every rising edge, answers the memory port from a
    Python list of words (zero extra latency) and keeps a random access in flight on every
    core -- the stream of :func:`cosim.bench.xorshift_stream`, which the C++ harness issues
    too.  Every translation is checked against the expected frame.  ``BENCH_CYCLES`` cycles.
``test_cosim_throughput``
    The co-simulation with every checker on (:class:`cosim.tb.tb_cosim.CosimSystem`): one
    process maps ``BENCH_NPAGES`` anonymous pages, touches them, then each core runs
    ``BENCH_ACCESSES`` random accesses (shadow-checked loads and stores) while nothing else
    runs.  The figure is the accesses of that phase over its wall time.
``test_cfy``
    The reclaim scenario of :mod:`cosim.tb.tb_cosim` with ``ptep_clear_flush_young`` flushing
    or not (``CFY_FLUSH``), watched by :class:`cosim.cfy.AgingMonitor`.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

SEED = int(os.environ.get("COSIM_SEED", "1"))


def _num(name: str, default, conv=int):
    try:
        return conv(os.environ.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number, not {os.environ.get(name)!r}")


def _report(rep: dict) -> None:
    path = os.environ.get("COSIM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(rep, fh, indent=2, default=str)


def _config() -> dict:
    try:
        return json.loads(os.environ.get("COSIM_CONFIG", "{}"))
    except ValueError:
        return {}


@cocotb.test()
async def test_plain_driver(dut):
    """Random accesses on every core, memory answered in the same coroutine, every edge."""
    from cosim.bench import ASID, ROOT_FRAME, Workload, build_image, xorshift_stream
    cfg = _config()
    ncores = int(cfg.get("ncores", 2))
    wl = Workload(npages=_num("BENCH_NPAGES", 32), seed=SEED,
                  store_ratio=_num("BENCH_STORE_RATIO", 0.3, float))
    ncycles = _num("BENCH_CYCLES", 20000)
    words = [int(w) for w in build_image(wl)]
    nwords = len(words)

    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    for i in range(ncores):
        getattr(dut, f"cpu{i}__req__valid").value = 0
        getattr(dut, f"cpu{i}__inval__valid").value = 0
    for n in ("dev__req__valid", "dev__fill__valid", "dev__young__valid", "dev__inval__valid",
              "dev__fault__ack"):
        getattr(dut, n).value = 0
    m_ready, m_rvalid = dut.mem__req__ready, dut.mem__resp__valid
    m_rdata, m_err = dut.mem__resp__rdata, dut.mem__resp__err
    m_valid, m_op, m_addr = dut.mem__req__valid, dut.mem__req__op, dut.mem__req__addr
    m_wdata, m_cmp = dut.mem__req__wdata, dut.mem__req__cmp
    m_ready.value = 1
    m_rvalid.value = 0
    m_rdata.value = 0
    m_err.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    cores = []
    for i in range(ncores):
        p = f"cpu{i}__"
        h = {n: getattr(dut, p + n) for n in ("req__valid", "req__ready", "req__vaddr",
                                              "req__op", "req__user", "req__sum", "req__asid",
                                              "req__root", "resp__valid", "resp__paddr",
                                              "resp__fault")}
        h["req__user"].value = 1
        h["req__sum"].value = 0
        h["req__asid"].value = ASID
        h["req__root"].value = ROOT_FRAME
        cores.append({"h": h, "stream": xorshift_stream(wl, i), "valid": False,
                      "accepted": False, "cur": None})
    accesses = loads = stores = errors = mem_ops = 0
    checksum = 0
    pulsing = False
    clk = dut.clk
    t0 = time.perf_counter()
    for _ in range(ncycles):
        await RisingEdge(clk)
        # Sample the cycle this edge ended.
        mv = m_valid.value if not pulsing else 0
        samples = [(c["h"]["req__ready"].value if c["valid"] else 0,
                    c["h"]["resp__valid"].value if c["accepted"] else 0) for c in cores]
        if pulsing:
            pulsing = False
            m_rvalid.value = 0
            m_ready.value = 1
        elif mv:
            idx = int(m_addr.value) >> 3
            op = int(m_op.value)
            err = idx >= nwords
            old = 0
            if not err:
                old = words[idx]
                if op == 1:
                    words[idx] = int(m_wdata.value)
                elif op == 2 and old == int(m_cmp.value):
                    words[idx] = int(m_wdata.value)
            mem_ops += 1
            m_rvalid.value = 1
            m_rdata.value = old
            m_err.value = int(err)
            m_ready.value = 0
            pulsing = True
        for i, c in enumerate(cores):
            ready, rvalid = samples[i]
            h = c["h"]
            if c["valid"] and ready:
                c["valid"], c["accepted"] = False, True
                h["req__valid"].value = 0
            if c["accepted"] and rvalid:
                c["accepted"] = False
                vaddr, store, data, expect = c["cur"]
                fault = int(h["resp__fault"].value)
                paddr = int(h["resp__paddr"].value)
                if fault or paddr != expect:
                    errors += 1
                    cocotb.log.error("core %d: 0x%x -> fault %d paddr 0x%09x, expected "
                                     "0x%09x (seed %d)", i, vaddr, fault, paddr, expect, SEED)
                else:
                    if store:
                        words[paddr >> 3] = data
                        stores += 1
                    else:
                        checksum ^= (words[paddr >> 3] + i) & 0xFFFF_FFFF_FFFF_FFFF
                        loads += 1
                    accesses += 1
            if not c["valid"] and not c["accepted"]:
                c["cur"] = cur = next(c["stream"])
                h["req__vaddr"].value = cur[0]
                h["req__op"].value = 1 if cur[1] else 0
                h["req__valid"].value = 1
                c["valid"] = True
    seconds = time.perf_counter() - t0
    _report({"test": "plain_driver", "cycles": ncycles, "accesses": accesses, "loads": loads,
             "stores": stores, "mem_ops": mem_ops, "errors": errors, "checksum": checksum,
             "loop_seconds": round(seconds, 4), "npages": wl.npages, "seed": SEED,
             "clock": "gpi"})
    assert errors == 0, f"{errors} wrong translations (seed {SEED})"


# --- experiments: proposed speed-ups of files this module does not own, switched on by the
# environment so the bench can measure them against the same deterministic run -------------


class _LockSemaphore:
    """A binary semaphore on a raw ``_thread`` lock.  cosim.host's hand-off strictly
    alternates release and acquire, so a binary one suffices; a second release without an
    acquire raises RuntimeError instead of going unnoticed."""
    __slots__ = ("_lock",)

    def __init__(self, value: int = 0):
        import _thread
        self._lock = _thread.allocate_lock()
        if not value:
            self._lock.acquire()

    def acquire(self) -> bool:
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


def _experiment_fast_handoff() -> None:
    """cosim.host with raw-lock semaphores (threading.Semaphore is a Condition in Python:
    ~40 us per round trip against ~20 us measured in a ping-pong outside the simulator)."""
    import threading
    import types
    import cosim.host as host
    host.threading = types.SimpleNamespace(Semaphore=_LockSemaphore, Thread=threading.Thread,
                                           local=threading.local,
                                           get_ident=threading.get_ident)


def _experiment_idle_memory() -> None:
    """cosim.memory.MemoryResponder that sleeps on the rising edge of ``mem__req__valid``
    while it has nothing to do, instead of waking on every clock edge."""
    from cocotb.triggers import RisingEdge
    from cosim import memory as cm

    async def _run(self):
        clk = self.dut.clk
        ready, rvalid = self._sig("req__ready"), self._sig("resp__valid")
        rdata, rerr = self._sig("resp__rdata"), self._sig("resp__err")
        valid = self._sig("req__valid")
        op_s, addr_s = self._sig("req__op"), self._sig("req__addr")
        wdata_s, cmp_s, src_s = (self._sig("req__wdata"), self._sig("req__cmp"),
                                 self._sig("req__src"))
        ready.value = 1
        rvalid.value = 0
        rdata.value = 0
        rerr.value = 0
        pending = None
        pulsing = False
        started = False
        def high(sig) -> bool:
            v = sig.value
            return v.is_resolvable and bool(int(v))   # X before the first edge settles

        while True:
            if started and pending is None and not pulsing and not high(valid):
                self.idle_waits = getattr(self, "idle_waits", 0) + 1
                await RisingEdge(valid)        # nothing to do until a request appears
            started = True
            await RisingEdge(clk)
            now = cm.cycle_now()
            if pulsing:
                pulsing = False
                rvalid.value = 0
                ready.value = 1
                continue
            if pending is None:
                if high(valid):
                    try:
                        op = cm.MemOp(int(op_s.value))
                    except ValueError:
                        self.violations.append(f"cycle {now}: memory request with op "
                                               f"{int(op_s.value)}")
                        op = cm.MemOp.READ
                    pending = (now + self.latency.draw(), int(src_s.value), op,
                               int(addr_s.value), int(wdata_s.value), int(cmp_s.value), now)
                    ready.value = 0
            if pending is not None:
                self.busy_cycles += 1
                if now >= pending[0]:
                    _, src, op, addr, wdata, cmp, req_edge = pending
                    txn = self._perform(src, op, addr, wdata, cmp, req_edge, now + 1)
                    rvalid.value = 1
                    rdata.value = txn.rdata
                    rerr.value = int(txn.err)
                    pending = None
                    pulsing = True
                    for fn in self.listeners:
                        fn(txn)

    cm.MemoryResponder._run = _run


def _experiment_instant_pte_loads() -> None:
    """CosimArch.pte_load served in the host thread at the current instant (logged in the
    memory model like any software read) instead of a resume round trip that waits for the
    next clock edge.  Changes timing (a page-table walk by the kernel takes no cycles), so it
    is judged by the checkers, not by reproducing the baseline's cycles."""
    from cosim.arch import CosimArch

    def pte_load(self, ptep: int) -> int:
        if ptep & 7:
            raise ValueError(f"PTE address 0x{ptep:09x} is not 8-byte aligned")
        return self._apply("load", ptep, 0, 0)

    CosimArch.pte_load = pte_load


_THREAD_PROFILES: list = []


def _profile_host_threads() -> None:
    """Profile every host thread (cosim.host starts them with ``threading.Thread``) with a
    profiler of its own; :func:`_dump_thread_profiles` merges them."""
    import cProfile
    import threading
    import types
    import cosim.host as host

    class ProfiledThread(threading.Thread):
        def run(self):
            prof = cProfile.Profile()
            _THREAD_PROFILES.append(prof)
            prof.enable()
            try:
                super().run()
            finally:
                prof.disable()

    base = host.threading
    host.threading = types.SimpleNamespace(
        Semaphore=base.Semaphore, Thread=ProfiledThread, local=base.local,
        get_ident=base.get_ident)


def _dump_thread_profiles(path: str) -> None:
    import pstats
    if _THREAD_PROFILES:
        st = pstats.Stats(_THREAD_PROFILES[0])
        for prof in _THREAD_PROFILES[1:]:
            st.add(prof)
        st.dump_stats(path)


EXPERIMENTS = {"fast_handoff": _experiment_fast_handoff, "idle_memory": _experiment_idle_memory,
               "instant_pte_loads": _experiment_instant_pte_loads}


def _apply_experiments() -> list[str]:
    names = [n for n in os.environ.get("BENCH_EXPERIMENTS", "").split(",") if n]
    for n in names:
        if n not in EXPERIMENTS:
            raise ValueError(f"Unknown experiment {n!r}; known: {', '.join(EXPERIMENTS)}")
        EXPERIMENTS[n]()
    return names


@cocotb.test()
async def test_cosim_throughput(dut):
    """Checked CPU accesses per second of the full co-simulation, workloads only."""
    from pyrmap.scenario import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    from pyrmap.pte import PAGE_SIZE
    from cosim.tb.tb_cosim import start_system
    npages = _num("BENCH_NPAGES", 32)
    count = _num("BENCH_ACCESSES", 200)
    experiments = _apply_experiments()
    s = await start_system(dut, SEED, nframes=npages + 48, command="cosim.bench")
    arch = s.arch

    def setup():
        mm = s.new_process()
        addr = s.mmap(mm, 0, npages * PAGE_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS)
        return mm, addr

    mm, addr = await s.call("setup", setup)
    s.workload(0, mm, [("store", addr + i * PAGE_SIZE) for i in range(npages)])
    s.spawn("touch", s.workloads[-1].run, mm=mm)
    await s.run_async()
    before = s.shadow.loads + s.shadow.stores
    resumes0 = arch.env.stats["resumes"]
    c0 = arch.cycle()
    rng = random.Random(SEED)
    for core in range(arch.ncores):
        s.random_workload(core, mm, count, store_ratio=0.3,
                          rng=random.Random(rng.randrange(1 << 30)))
    prof = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    await s.run_async()
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["BENCH_PROFILE"])
    n = s.shadow.loads + s.shadow.stores - before
    verdicts = [{"name": nm, "checks": c, "violations": v, "verdict": vd}
                for nm, c, v, vd in s.checkers.verdicts()]
    _report({"test": "cosim_throughput", "cycles": arch.cycle() - c0, "accesses": n,
             "loop_seconds": round(seconds, 4), "npages": npages, "seed": SEED,
             "host": {"resumes": arch.env.stats["resumes"] - resumes0,
                      "threads": arch.env.stats["threads"]},
             "experiments": experiments,
             "memory": {"transactions": len(s.memory.log),
                        "idle_waits": getattr(s.memory, "idle_waits", None)},
             "checkers": verdicts})
    s.memory.stop()
    assert n == count * arch.ncores, f"{n} accesses completed, {count * arch.ncores} issued"


@cocotb.test()
async def test_cfy(dut):
    """The reclaim scenario under AgingMonitor; ``CFY_FLUSH=1`` flushes on young (2008)."""
    from cosim import cfy
    from cosim.tb import tb_cosim
    missing = [n for n in ("start_system", "reclaim_scenario", "scenario_params", "Progress",
                           "report") if not hasattr(tb_cosim, n)]
    if missing:
        raise RuntimeError(f"cosim.tb.tb_cosim has no {', '.join(missing)}: the "
                           f"clear-flush-young run reuses its reclaim scenario through them")
    flush = os.environ.get("CFY_FLUSH", "1") == "1"
    experiments = _apply_experiments()
    use_monitor = os.environ.get("CFY_MONITOR", "1") == "1"
    window = _num("CFY_WINDOW", cfy.DEFAULT_WINDOW)
    monitor = cfy.AgingMonitor(window=window)
    started = {}
    orig_start = tb_cosim.start_system

    async def start_system(*args, **kw):
        s = await orig_start(*args, **kw)
        s.kernel.config.clear_flush_young_flushes = flush
        if use_monitor:
            monitor.attach(s)
        started["s"] = s
        return s

    p = tb_cosim.scenario_params()
    p["scenario"] = "reclaim"
    progress = tb_cosim.Progress()
    t0 = time.monotonic()
    out = {}
    error = None
    tb_cosim.start_system = start_system
    prof = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    if os.environ.get("BENCH_PROFILE_THREADS"):
        _profile_host_threads()
    try:
        await tb_cosim.reclaim_scenario(dut, SEED, p, progress, out)
    except Exception as exc:  # noqa: BLE001 - reported, then re-raised below
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.environ["BENCH_PROFILE"])
        if os.environ.get("BENCH_PROFILE_THREADS"):
            _dump_thread_profiles(os.environ["BENCH_PROFILE_THREADS"])
        tb_cosim.start_system = orig_start
        monitor.detach()
    rep = {"flush": flush, "seed": SEED, "wall_seconds": round(time.monotonic() - t0, 2),
           "experiments": experiments,
           "error": error, "params": {k: v for k, v in p.items() if k != "command"}}
    if "s" in started:
        s = started["s"]
        rep.update(monitor.figures(s))
        rep["scenario"] = tb_cosim.report(s, SEED, p, time.monotonic() - t0, error)
    _report(rep)
    if error:
        raise AssertionError(error)
