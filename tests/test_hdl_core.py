"""CoreMmu on Amaranth's simulator: hits and misses per page size, the D=0 re-walk, the four
invalidation kinds, invalidation racing a walk (squash, and the fill-after-inval quirk),
counters, and a seeded lockstep comparison with pyrmap.softarch.SoftArch (the golden MMU)."""

from __future__ import annotations

import random

import pytest

from hdl.core import CORE_COUNTERS, CoreMmu
from hdl.layouts import MemOp
from pyrmap import pte as P
from pyrmap.arch import TIMED_COUNTERS, InvalKind
from pyrmap.physmem import PhysMem
from pyrmap.pte import AccessType, FaultKind
from pyrmap.softarch import SoftArch
from test_hdl_memmodel import MemModel, PageTables, inval, run_sim, tlb_entries, translate

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

V, R, W, X, U, G, A, D = (P._PAGE_V, P._PAGE_R, P._PAGE_W, P._PAGE_X, P._PAGE_U, P._PAGE_G,
                          P._PAGE_A, P._PAGE_D)
LOAD, STORE, FETCH = AccessType.LOAD, AccessType.STORE, AccessType.FETCH
RWU = V | R | W | U


def perf(ctx, dut):
    return {name: ctx.get(getattr(dut.perf, name)) for name in CORE_COUNTERS}


def make(latency=1, **params):
    dut = CoreMmu(**params)
    mem = MemModel(dut.mem, latency=latency)
    return dut, mem, PageTables(mem)


# --- hits and misses ---------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("ways", [8, 2], ids=["fa", "2way"])
def test_hit_anywhere_in_page(level, ways):
    dut, mem, pt = make(tlb_entries=8, tlb_ways=ways)
    size = 1 << (12 + 9 * level)
    base = 0x40000000 if level == 2 else 0x12_0000_0000 // size * size
    ppn = 0x80000 >> (9 * level) << (9 * level) if level else 0x3456
    pt.map(base, ppn, level=level, flags=RWU | A | D)
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, base + 0x10, LOAD))
        out.append(await translate(ctx, dut, base + size - 8, LOAD))   # other end of the page
        out.append(await translate(ctx, dut, base + size, LOAD))       # next page: unmapped
        out.append(perf(ctx, dut))
        out.append(tlb_entries(ctx, dut.tlb, 9))

    run_sim(dut, bench, background=[mem.run])
    first, second, outside, counters, entries = out
    assert (first.fault, first.hit) == (FaultKind.NONE, 0)
    assert first.paddr == (ppn << 12) + 0x10
    assert (second.fault, second.hit) == (FaultKind.NONE, 1)
    assert second.paddr == (ppn << 12) + size - 8
    assert outside.fault == FaultKind.PAGE and outside.hit == 0
    assert counters["lookups"] == 3 and counters["hits"] == 1 and counters["misses"] == 2
    assert counters["walks"] == 2 and counters["walk_cycles"] > 2 * 3
    # Each walk reads one PTE per level down to the leaf (or to the invalid entry of the
    # unmapped page next to it); A and D are set already, so no compare-and-swap.
    assert counters["walk_mem"] == 2 * (3 - level)
    assert len(entries) == 1 and entries[0].level == level and entries[0].ppn == ppn
    assert entries[0].vpn == (base >> 12) and entries[0].a and entries[0].d


def test_store_to_clean_entry_rewalks_and_sets_d():
    dut, mem, pt = make()
    leaf = pt.map(0x5000, 0x777, flags=RWU | A)        # A=1, D=0
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, 0x5008, LOAD))     # fills D=0
        out.append(await translate(ctx, dut, 0x5010, LOAD))     # hit
        out.append(mem.read(leaf))
        out.append(await translate(ctx, dut, 0x5018, STORE))    # D=0 entry: re-walk + CAS
        out.append(await translate(ctx, dut, 0x5020, STORE))    # now a hit
        out.append(perf(ctx, dut))
        out.append(tlb_entries(ctx, dut.tlb, 9))

    run_sim(dut, bench, background=[mem.run])
    l1, l2, before, s1, s2, c, entries = out
    assert (l1.hit, l2.hit, s1.hit, s2.hit) == (0, 1, 0, 1)
    assert s1.fault == s2.fault == FaultKind.NONE and s1.paddr == 0x777018
    assert not before & D and mem.read(leaf) & D
    assert c["d_sets"] == 1 and c["a_sets"] == 0 and c["walks"] == 2
    assert len(entries) == 1 and entries[0].d, "the re-walk replaces the entry, no duplicate"


def test_svade_store_to_clean_entry_faults():
    dut, mem, pt = make(svadu=False)
    leaf = pt.map(0x5000, 0x777, flags=RWU | A)
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, 0x5008, LOAD))
        out.append(await translate(ctx, dut, 0x5008, STORE))

    run_sim(dut, bench, background=[mem.run])
    assert out[0].fault == FaultKind.NONE
    assert out[1].fault == FaultKind.PAGE and out[1].hit == 0
    assert not mem.read(leaf) & D


def test_mxr_on_the_tlb_hit_path():
    # A fetch fills an execute-only entry; a load hits it only with MXR, else re-walks and
    # faults; SoftArch agrees on every step.
    dut, mem, pt = make()
    pt.map(0x9000, 0x55, flags=V | X | U | A)
    steps = [(FETCH, 0), (LOAD, 1), (LOAD, 0), (FETCH, 0), (LOAD, 1), (STORE, 1)]
    out = []

    async def bench(ctx):
        for op, mxr in steps:
            out.append(await translate(ctx, dut, 0x9008, op, mxr=mxr))

    run_sim(dut, bench, background=[mem.run])
    assert [(r.fault, r.hit) for r in out] == [
        (FaultKind.NONE, 0), (FaultKind.NONE, 1), (FaultKind.PAGE, 0), (FaultKind.NONE, 0),
        (FaultKind.NONE, 1), (FaultKind.PAGE, 0)]
    assert out[1].paddr == 0x55008
    pm = PhysMem(0x100)
    for addr, w in mem.words.items():
        pm.write(addr, w)
    golden = SoftArch(pm, ncores=1, seed=1)
    golden.set_satp(0, 0, 0x80)
    model = [golden.translate(0, 0x9008, op, user=True, sum=False, mxr=bool(mxr))
             for op, mxr in steps]
    assert [(r.fault, int(r.hit)) for r in out] == [(e.fault, int(e.hit)) for e in model]


def test_permission_failure_on_hit_rewalks():
    # A load fills a read-only entry; software then grants W without a flush: the store must
    # see the new PTE (re-walk), not fault on the stale entry.
    dut, mem, pt = make()
    leaf = pt.map(0x9000, 0x55, flags=V | R | U | A)
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, 0x9000, LOAD))
        mem.write(leaf, P.pfn_pte(0x55, RWU | A))
        out.append(await translate(ctx, dut, 0x9000, STORE))

    run_sim(dut, bench, background=[mem.run])
    assert out[1].fault == FaultKind.NONE and out[1].hit == 0
    assert mem.read(leaf) & D


def test_asid_and_global():
    dut, mem, pt = make()
    pt.map(0x1000, 0x11, flags=RWU | A | D)
    pt.map(0x2000, 0x22, flags=V | R | W | G | A | D)    # global, S-mode page
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, 0x1000, LOAD, asid=1))
        out.append(await translate(ctx, dut, 0x1000, LOAD, asid=2))   # other ASID: miss
        out.append(await translate(ctx, dut, 0x2000, LOAD, asid=1, user=0))
        out.append(await translate(ctx, dut, 0x2000, LOAD, asid=2, user=0))   # global: hit

    run_sim(dut, bench, background=[mem.run])
    assert [r.hit for r in out] == [0, 0, 0, 1]


def test_non_canonical_never_hits():
    dut, mem, pt = make()
    pt.map(0x1000, 0x11, flags=RWU | A | D)
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, 0x1000, LOAD))
        out.append(await translate(ctx, dut, 0x1000 | (1 << 40), LOAD))   # same VPN bits

    run_sim(dut, bench, background=[mem.run])
    assert out[1].fault == FaultKind.PAGE and out[1].hit == 0


# --- invalidation kinds -------------------------------------------------------------------------

# Entries: (va, asid, global)
INVAL_SETUP = [(0x1000, 1, False), (0x2000, 1, False), (0x1000, 2, False), (0x3000, 2, True),
               (0x4020_0000, 1, False)]        # last one is a 2 MiB page


def _expected_after(kind, va, asid):
    keep = []
    for eva, easid, g in INVAL_SETUP:
        size = 1 << 21 if eva >= 0x4000_0000 else 1 << 12
        covers = eva // size == va // size
        if kind == InvalKind.ALL:
            gone = True
        elif kind == InvalKind.VA:
            gone = covers
        elif kind == InvalKind.ASID:
            gone = easid == asid and not g
        else:
            gone = covers and (easid == asid or g)
        if not gone:
            keep.append((eva, easid))
    return sorted(keep)


@pytest.mark.parametrize("kind,va,asid", [
    (InvalKind.ALL, 0, 0),
    (InvalKind.VA, 0x1000, 0),
    (InvalKind.VA, 0x4020_0000 + 0x1234_5, 0),     # inside the 2 MiB page
    (InvalKind.ASID, 0, 1),
    (InvalKind.ASID, 0, 2),                        # keeps the global entry
    (InvalKind.VA_ASID, 0x1000, 2),
    (InvalKind.VA_ASID, 0x3000, 1),                # global entry mapping the VA goes
], ids=["all", "va", "va-in-superpage", "asid1", "asid2-keeps-global", "va-asid",
        "va-asid-global"])
@pytest.mark.parametrize("ways", [8, 2], ids=["fa", "2way"])
def test_inval_kinds(kind, va, asid, ways):
    dut, mem, pt = make(tlb_entries=8, tlb_ways=ways)
    pt.map(0x1000, 0x11, flags=RWU | A | D)
    pt.map(0x2000, 0x22, flags=RWU | A | D)
    pt.map(0x3000, 0x33, flags=RWU | G | A | D)
    pt.map(0x4020_0000, 0x200, level=1, flags=RWU | A | D)
    out = {}

    async def bench(ctx):
        for eva, easid, _ in INVAL_SETUP:
            r = await translate(ctx, dut, eva, LOAD, asid=easid)
            assert r.fault == FaultKind.NONE
        before = tlb_entries(ctx, dut.tlb, 9)
        out["before"] = len(before)
        out["cycles"] = await inval(ctx, dut.inval, kind, va, asid)
        out["after"] = tlb_entries(ctx, dut.tlb, 9)
        out["perf"] = perf(ctx, dut)
        # what is left still hits
        out["hits"] = []
        for eva, easid, _ in INVAL_SETUP:
            r = await translate(ctx, dut, eva, LOAD, asid=easid)
            out["hits"].append(((eva, easid), r.hit))

    run_sim(dut, bench, background=[mem.run])
    assert out["before"] == len(INVAL_SETUP)
    left = sorted((e.vpn << 12, e.asid) for e in out["after"])
    expect = _expected_after(kind, va, asid)
    assert left == expect
    assert out["perf"]["invals"] == 1
    assert out["cycles"] <= 2, "an invalidation is acknowledged the cycle after it is seen"
    for (eva, easid), hit in out["hits"]:
        if (eva, easid) in expect:
            assert hit


# --- invalidation racing a walk --------------------------------------------------------------

OLD_PPN, NEW_PPN = 0x99, 0x98


def _race_sweep(offsets, latency=3, **quirks):
    """For each offset: start a walk of 0x7000 (mapped to OLD_PPN) and, ``offset`` cycles after
    the request, remap the page to NEW_PPN and raise an invalidation of it (software changes
    the PTE, then invalidates).  Records the response and its cycle, the ack cycle, what the
    TLB holds right after the ack and a few cycles later, and whether the invalidation was
    applied in the walk's last cycle.  One simulation."""
    dut, mem, pt = make(latency=latency, **quirks)
    leaf = pt.map(0x7000, OLD_PPN, flags=RWU | A | D)
    old, new = mem.read(leaf), P.pfn_pte(NEW_PPN, RWU | A | D)
    results = {}

    async def bench(ctx):
        req, iv = dut.req, dut.inval
        for offset in offsets:
            mem.write(leaf, old)
            await inval(ctx, iv, InvalKind.ALL)
            out = {"same_cycle": False}
            for name, val in dict(vaddr=0x7000, op=LOAD, user=1, sum=0, asid=3,
                                  root=0x80).items():
                ctx.set(getattr(req, name), val)
            ctx.set(req.valid, 1)
            ctx.set(iv.kind, InvalKind.VA_ASID)
            ctx.set(iv.vaddr, 0x7000)
            ctx.set(iv.asid, 3)
            cycle, accepted, state = 0, False, 0
            while "resp" not in out or state < 2:
                if cycle == offset and state == 0:
                    mem.write(leaf, new)
                    ctx.set(iv.valid, 1)
                    state = 1
                _, _, ready, rv, fault, paddr, apply, done, ack = await ctx.tick().sample(
                    req.ready, dut.resp.valid, dut.resp.fault, dut.resp.paddr,
                    iv.valid & ~iv.ack, dut.walker.done.valid, iv.ack)
                if not accepted and ready:
                    accepted = True
                    ctx.set(req.valid, 0)
                if rv:
                    out["resp"] = (fault, paddr)
                    out["resp_cycle"] = cycle
                if state == 1 and apply and done:
                    out["same_cycle"] = True
                if state == 1 and ack:
                    ctx.set(iv.valid, 0)
                    state = 2
                    out["ack_cycle"] = cycle
                    out["after_ack"] = tlb_entries(ctx, dut.tlb, 9)
                cycle += 1
            await ctx.tick().repeat(8)
            out["later"] = tlb_entries(ctx, dut.tlb, 9)
            out["squashed"] = ctx.get(dut.perf.squashed)
            results[offset] = out

    run_sim(dut, bench, background=[mem.run])
    return results


def _stale(out):
    """What of the old mapping survived the ack: a response in or after the ack cycle, or a
    TLB entry right after the ack or later."""
    bad = []
    if out["resp_cycle"] >= out["ack_cycle"] and out["resp"] != (FaultKind.NONE,
                                                                 NEW_PPN << 12):
        bad.append(f"response {out['resp']} in cycle {out['resp_cycle']}, ack in cycle "
                   f"{out['ack_cycle']}")
    bad += [f"entry {e}" for e in out["after_ack"] + out["later"] if e.ppn != NEW_PPN]
    return bad


def test_inval_racing_walk_restarts_it():
    res = _race_sweep(range(0, 18))
    for offset, out in res.items():
        assert _stale(out) == [], f"offset {offset}"
        assert out["resp"][0] == FaultKind.NONE, f"offset {offset}"
    assert any(out["same_cycle"] for out in res.values()), \
        "no offset put the invalidation on the walk's last cycle"
    assert any(out["resp_cycle"] > out["ack_cycle"] for out in res.values()), \
        "no offset had a walk in flight at the ack"
    assert res[17]["squashed"] > 0


@pytest.mark.parametrize("quirk,what", [("quirk_fill_after_inval", "entry"),
                                        ("quirk_walk_answer_after_inval", "response")])
def test_quirks_let_the_old_mapping_survive_the_ack(quirk, what):
    offsets = range(0, 18)
    buggy = _race_sweep(offsets, **{quirk: True})
    stale = {off: _stale(out) for off, out in buggy.items() if _stale(out)}
    assert stale, f"with {quirk} an in-flight walk must be able to outlive the ack"
    assert any(b.startswith(what) for bad in stale.values() for b in bad), stale
    fixed = _race_sweep(sorted(stale))
    assert {off: _stale(out) for off, out in fixed.items() if _stale(out)} == {}


# --- lockstep with the golden model (SoftArch) ----------------------------------------------

CONFIGS = [
    dict(tlb_entries=8, tlb_ways=8, replacement="plru"),
    dict(tlb_entries=4, tlb_ways=4, replacement="fifo"),
    dict(tlb_entries=8, tlb_ways=2, replacement="plru", superpage_entries=2),
    dict(tlb_entries=4, tlb_ways=1, replacement="fifo", superpage_entries=2),
    dict(tlb_entries=8, tlb_ways=4, replacement="random", superpage_entries=2),
]


def _lockstep(seed, cfg, naccess=60, svadu=True, golden_svadu=None):
    rng = random.Random(seed)
    pm = PhysMem(0x100)
    golden = SoftArch(pm, ncores=1, svadu=svadu if golden_svadu is None else golden_svadu,
                      seed=seed, **cfg)
    pt = PageTables(pm)
    maps = []
    for i in range(10):
        level = rng.choice([0, 0, 0, 0, 1, 2])
        va = rng.randrange(1 << 26) << 12 & ~((1 << (12 + 9 * level)) - 1)
        flags = V | rng.choice([R, R | W, R | X, R | W | X, X]) | U \
            | (A if rng.random() < 0.6 else 0) | (D if rng.random() < 0.4 else 0) \
            | (G if rng.random() < 0.15 else 0)
        a = pt.pte_addr(va, level)
        if P.pte_present(pm.read(a)):
            continue
        pm.write(a, P.pfn_pte(rng.randrange(1, 1 << 16) << (9 * level), flags))
        maps.append((va, level))
    dut = CoreMmu(svadu=svadu, **cfg)
    mem = MemModel(dut.mem, latency=(1, 3), seed=seed)
    for ppn in range(0x80, pt.next_ppn):
        for i in range(512):
            w = pm.read((ppn << 12) + 8 * i)
            if w:
                mem.words[(ppn << 12) + 8 * i] = w
    ops = []
    for _ in range(naccess):
        if rng.random() < 0.1:
            ops.append(("inval", InvalKind(rng.randrange(4)), rng.choice(maps)[0],
                        rng.randrange(3)))
        else:
            va, level = rng.choice(maps)
            va += rng.randrange(1 << (12 + 9 * level)) & ~7
            ops.append(("access", va, rng.choice([LOAD, LOAD, STORE, FETCH]),
                        rng.randrange(3), rng.random() < 0.8, rng.random() < 0.3))
    got = []

    async def bench(ctx):
        for op in ops:
            if op[0] == "inval":
                await inval(ctx, dut.inval, op[1], op[2], op[3])
                got.append(None)
            else:
                _, va, kind, asid, user, mxr = op
                got.append(await translate(ctx, dut, va, kind, asid=asid, user=int(user),
                                           mxr=int(mxr), root=0x80))
        got.append(perf(ctx, dut))
        got.append(tlb_entries(ctx, dut.tlb, 9))

    run_sim(dut, bench, background=[mem.run])
    for op, r in zip(ops, got):
        if op[0] == "inval":
            golden.inval(0, op[1], op[2], op[3])
            continue
        _, va, kind, asid, user, mxr = op
        golden.set_satp(0, asid, 0x80)
        e = golden.translate(0, va, kind, user=user, sum=False, mxr=mxr)
        where = (f"seed={seed} cfg={cfg} va={va:#x} {kind.name} asid={asid} user={user} "
                 f"mxr={mxr}")
        assert r.fault == e.fault, where
        assert r.paddr == e.paddr, where
        if cfg["replacement"] != "random":
            assert bool(r.hit) == e.hit, where
    counters, entries = got[-2], got[-1]
    gperf = golden.perf(0)
    for name in CORE_COUNTERS:
        if name in TIMED_COUNTERS or name == "squashed":
            continue
        if cfg["replacement"] == "random" and name in ("hits", "misses", "walks"):
            continue
        assert counters[name] == gperf[name], f"{name} seed={seed} cfg={cfg}"
    if cfg["replacement"] != "random":
        assert sorted(entries, key=repr) == sorted(golden.tlb_entries(0), key=repr), \
            f"TLB contents differ seed={seed} cfg={cfg}"
    for addr, w in mem.words.items():
        assert pm.read(addr) == w, f"memory differs at {addr:#x} seed={seed}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['tlb_entries']}x{c['tlb_ways']}"
                         f"-{c['replacement']}")
@pytest.mark.parametrize("seed", [1, 2])
def test_lockstep_with_softarch(seed, cfg):
    _lockstep(seed, cfg, svadu=seed % 2 == 1)


def test_lockstep_checker_catches_a_mismatch():
    # The RTL runs Svadu, the golden model Svade: the comparison must fail.
    with pytest.raises(AssertionError, match="seed=1"):
        _lockstep(1, CONFIGS[0], svadu=True, golden_svadu=False)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['tlb_entries']}x{c['tlb_ways']}"
                         f"-{c['replacement']}")
@pytest.mark.parametrize("seed", range(10, 20))
def test_lockstep_with_softarch_long(seed, cfg):
    _lockstep(seed, cfg, naccess=200, svadu=seed % 2 == 1)


def test_cas_retry_counted_and_fill_uses_the_new_pte():
    # Between the walker's read of the leaf and its CAS, software write-protects the page and
    # marks it young: the CAS fails, the walk restarts and the load fills from the new PTE.
    dut, mem, pt = make(latency=2)
    leaf = pt.map(0x6000, 0x66, flags=RWU)          # A=0: the load must CAS
    fired = []

    def hook(model, op, rdata):
        if op == MemOp.READ and not fired:
            fired.append(1)
            model.write(leaf, P.pfn_pte(0x66, V | R | U | A))
        return not fired
    mem.after(leaf, hook)
    out = []

    async def bench(ctx):
        out.append(await translate(ctx, dut, 0x6000, LOAD))
        out.append(perf(ctx, dut))
        out.append(tlb_entries(ctx, dut.tlb, 9))

    run_sim(dut, bench, background=[mem.run])
    r, c, entries = out
    assert r.fault == FaultKind.NONE and r.paddr == 0x66000
    assert c["cas_retries"] == 1 and c["a_sets"] == 0 and c["walks"] == 1
    assert len(entries) == 1 and not entries[0].perm & W, "the fill is the re-read PTE"
    assert mem.read(leaf) == P.pfn_pte(0x66, V | R | U | A)
