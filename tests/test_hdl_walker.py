"""PageWalker on Amaranth's simulator: every Sv39 rule against pyrmap.walk.sv39_walk, the CAS
retry path, bus errors, Svade, the A/D quirks, and a seeded random comparison."""

from __future__ import annotations

import random

import pytest

from hdl.layouts import MemOp
from hdl.walker import PageWalker
from pyrmap import pte as P
from pyrmap.pte import AccessType, FaultKind
from pyrmap.walk import FaultCause, sv39_walk
from test_hdl_memmodel import MemModel, PageTables, run_sim

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

V, R, W, X, U, G, A, D = (P._PAGE_V, P._PAGE_R, P._PAGE_W, P._PAGE_X, P._PAGE_U, P._PAGE_G,
                          P._PAGE_A, P._PAGE_D)
LOAD, STORE, FETCH = AccessType.LOAD, AccessType.STORE, AccessType.FETCH


async def hw_walk(ctx, wk, vaddr, op, *, user=1, sum=0, mxr=0, root=0x80, timeout=3000):
    st = wk.start
    ctx.set(st.vaddr, vaddr)
    ctx.set(st.op, op)
    ctx.set(st.user, user)
    ctx.set(st.sum, sum)
    ctx.set(st.mxr, mxr)
    ctx.set(st.root, root)
    ctx.set(st.valid, 1)
    events = {"a_set": 0, "d_set": 0, "cas_retry": 0}
    accepted = False
    for _ in range(timeout):
        _, _, ready, done, fault, paddr, pte, level, a, d, c = await ctx.tick().sample(
            st.ready, wk.done.valid, wk.done.fault, wk.done.paddr, wk.done.pte.as_value(),
            wk.done.level, wk.events.a_set, wk.events.d_set, wk.events.cas_retry)
        if not accepted and ready:
            accepted = True
            ctx.set(st.valid, 0)
            continue
        events["a_set"] += a
        events["d_set"] += d
        events["cas_retry"] += c
        if done:
            return dict(fault=FaultKind(fault), paddr=paddr, pte=pte, level=level, **events)
    raise TimeoutError(f"walk of {vaddr:#x} did not finish")


def run_walks(mem_setup, accesses, *, svadu=True, latency=1, seed=0, walker=PageWalker,
              **quirks):
    """Run ``accesses`` [(vaddr, op, user, sum[, mxr])] through a fresh ``walker`` on a
    MemModel that ``mem_setup(mem)`` prepared; return (hw results, mem)."""
    wk = walker(svadu=svadu, **quirks)
    mem = MemModel(wk.mem, latency=latency, seed=seed)
    mem_setup(mem)
    out = []

    async def bench(ctx):
        for vaddr, op, user, sum_, *mxr in accesses:
            out.append(await hw_walk(ctx, wk, vaddr, op, user=user, sum=sum_,
                                     mxr=mxr[0] if mxr else 0))

    run_sim(wk, bench, background=[mem.run])
    return out, mem


def check_against_golden(mem_setup, accesses, *, svadu=True, latency=1, seed=0,
                         _rtl_svadu=None, walker=PageWalker):
    """Walk on the RTL and with sv39_walk on a copy of the same memory; compare everything."""
    golden_mem = MemModel(None)
    mem_setup(golden_mem)
    read, cas, words = golden_mem.golden_ports()
    expect = [sv39_walk(read, cas, va, op, user=bool(u), sum=bool(s), root=0x80, svadu=svadu,
                        mxr=bool(x[0]) if x else False)
              for va, op, u, s, *x in accesses]
    got, mem = run_walks(mem_setup, accesses, svadu=svadu if _rtl_svadu is None else _rtl_svadu,
                         latency=latency, seed=seed, walker=walker)
    for (va, op, u, s, *_), g, e in zip(accesses, got, expect):
        where = f"va={va:#x} op={op.name} user={u} sum={s} seed={seed}: golden {e.cause}"
        assert g["fault"] == e.fault, where
        if e.ok:
            assert g["paddr"] == e.paddr, where
            assert g["pte"] == e.pte, where
            assert g["level"] == e.level, where
            assert g["a_set"] == e.a_set and g["d_set"] == e.d_set, where
    assert {k: v for k, v in mem.words.items() if v} == {k: v for k, v in words.items() if v}, \
        f"memory differs from the golden walk's (seed={seed})"
    # The exact sequence of PTE reads, across all accesses.
    golden_reads = [a for r in expect for a, _ in r.reads]
    hw_reads = [e[1] for e in mem.log if e[0] == MemOp.READ and not e[5]]
    assert hw_reads == golden_reads, f"PTE read sequence differs (seed={seed})"
    return got, expect, mem


VA = 0x0000_0012_3456_7678     # a canonical user VA (bit 38 clear)


def _leaf(flags, level=0, ppn=None):
    ppn = {0: 0x12345, 1: 0x12200, 2: 0x40000}[level] if ppn is None else ppn

    def setup(mem):
        PageTables(mem).map(VA, ppn, level=level, flags=flags)
    return setup


RULES = [
    # (name, setup, op, user, sum, expected fault)
    ("load 4K", _leaf(V | R | U | A), LOAD, 1, 0, FaultKind.NONE),
    ("load 2M", _leaf(V | R | U | A, level=1), LOAD, 1, 0, FaultKind.NONE),
    ("load 1G", _leaf(V | R | U | A, level=2), LOAD, 1, 0, FaultKind.NONE),
    ("store sets D", _leaf(V | R | W | U | A), STORE, 1, 0, FaultKind.NONE),
    ("load sets A", _leaf(V | R | U), LOAD, 1, 0, FaultKind.NONE),
    ("store sets A and D on 2M", _leaf(V | R | W | U, level=1), STORE, 1, 0, FaultKind.NONE),
    ("fetch X", _leaf(V | X | U | A), FETCH, 1, 0, FaultKind.NONE),
    ("V=0 leaf", _leaf(R | U | A), LOAD, 1, 0, FaultKind.PAGE),
    ("W without R", _leaf(V | W | U | A | D), STORE, 1, 0, FaultKind.PAGE),
    ("reserved bit 54", _leaf(V | R | U | A | (1 << 54)), LOAD, 1, 0, FaultKind.PAGE),
    ("reserved bit 63", _leaf(V | R | U | A | (1 << 63)), LOAD, 1, 0, FaultKind.PAGE),
    ("misaligned 2M", _leaf(V | R | U | A, level=1, ppn=0x12201), LOAD, 1, 0, FaultKind.PAGE),
    ("misaligned 1G", _leaf(V | R | U | A, level=2, ppn=0x40200), LOAD, 1, 0, FaultKind.PAGE),
    ("load without R", _leaf(V | X | U | A), LOAD, 1, 0, FaultKind.PAGE),
    ("store without W", _leaf(V | R | U | A | D), STORE, 1, 0, FaultKind.PAGE),
    ("fetch without X", _leaf(V | R | U | A), FETCH, 1, 0, FaultKind.PAGE),
    ("user on S page", _leaf(V | R | A), LOAD, 1, 0, FaultKind.PAGE),
    ("S on U page, no SUM", _leaf(V | R | U | A), LOAD, 0, 0, FaultKind.PAGE),
    ("S on U page, SUM", _leaf(V | R | U | A), LOAD, 0, 1, FaultKind.NONE),
    ("S store U page, SUM", _leaf(V | R | W | U | A | D), STORE, 0, 1, FaultKind.NONE),
    ("S fetch U page, SUM", _leaf(V | X | U | A), FETCH, 0, 1, FaultKind.PAGE),
    ("S on S page", _leaf(V | R | A), LOAD, 0, 0, FaultKind.NONE),
    ("faulting store leaves D", _leaf(V | R | A), STORE, 1, 0, FaultKind.PAGE),
]


@pytest.mark.parametrize("name,setup,op,user,sum_,fault", RULES, ids=[r[0] for r in RULES])
def test_walk_rules(name, setup, op, user, sum_, fault):
    got, expect, _ = check_against_golden(setup, [(VA, op, user, sum_)])
    assert got[0]["fault"] == fault == expect[0].fault


# MXR (mstatus.MXR): a load may read an execute-only page; nothing else changes.
MXR_RULES = [
    # (name, setup, op, user, sum, mxr, expected fault)
    ("MXR load of an X-only page", _leaf(V | X | U | A), LOAD, 1, 0, 1, FaultKind.NONE),
    ("no MXR: load of an X-only page", _leaf(V | X | U | A), LOAD, 1, 0, 0, FaultKind.PAGE),
    ("MXR load sets A", _leaf(V | X | U), LOAD, 1, 0, 1, FaultKind.NONE),
    ("MXR does not grant stores", _leaf(V | X | U | A | D), STORE, 1, 0, 1, FaultKind.PAGE),
    ("MXR does not grant fetches", _leaf(V | R | U | A), FETCH, 1, 0, 1, FaultKind.PAGE),
    ("MXR S load of a U X-only page, no SUM", _leaf(V | X | U | A), LOAD, 0, 0, 1,
     FaultKind.PAGE),
    ("MXR S load of a U X-only page, SUM", _leaf(V | X | U | A), LOAD, 0, 1, 1,
     FaultKind.NONE),
    ("MXR load of a 2M X-only page", _leaf(V | X | U | A, level=1), LOAD, 1, 0, 1,
     FaultKind.NONE),
]


@pytest.mark.parametrize("name,setup,op,user,sum_,mxr,fault", MXR_RULES,
                         ids=[r[0] for r in MXR_RULES])
def test_mxr_rules(name, setup, op, user, sum_, mxr, fault):
    got, expect, _ = check_against_golden(setup, [(VA, op, user, sum_, mxr)])
    assert got[0]["fault"] == fault == expect[0].fault


# A leaf with W and X but no R (U, A, D set): X makes it a leaf, so only the W-without-R rule
# can fault it (with X clear, the non-leaf rule on A/D/U would fault it first).
WX_LEAF = V | W | X | U | A | D


class _WalkerWithoutWRule(PageWalker):
    """A walker built without the W-without-R rule: the mutant the leaf test must kill."""

    def pte_invalid(self, pte):
        return ~pte.v | (pte.reserved != 0)


@pytest.mark.parametrize("op", [LOAD, STORE, FETCH])
def test_leaf_with_w_and_x_but_no_r_faults_on_the_w_without_r_rule(op):
    got, expect, _ = check_against_golden(_leaf(WX_LEAF), [(VA, op, 1, 0)])
    assert got[0]["fault"] == FaultKind.PAGE
    assert expect[0].cause == FaultCause.W_WITHOUT_R


def test_leaf_with_w_and_x_but_no_r_kills_a_walker_without_the_rule():
    accesses = [(VA, STORE, 1, 0), (VA, FETCH, 1, 0)]
    got, _ = run_walks(_leaf(WX_LEAF), accesses, walker=_WalkerWithoutWRule)
    assert [g["fault"] for g in got] == [FaultKind.NONE, FaultKind.NONE], \
        "the mutant grants the store and the fetch"
    with pytest.raises(AssertionError, match="golden FaultCause.W_WITHOUT_R"):
        check_against_golden(_leaf(WX_LEAF), accesses, walker=_WalkerWithoutWRule)


def _nonleaf_bad(bits, level):
    def setup(mem):
        pt = PageTables(mem)
        addr = pt.map(VA, 0x12345)
        # corrupt the non-leaf PTE at `level` (2 or 1) with `bits`
        a = pt.pte_addr(VA, level)
        mem.write(a, mem.read(a) | bits)
        del addr
    return setup


@pytest.mark.parametrize("bits", [A, D, U], ids=["A", "D", "U"])
@pytest.mark.parametrize("level", [2, 1])
def test_nonleaf_with_adu(bits, level):
    got, _, _ = check_against_golden(_nonleaf_bad(bits, level), [(VA, LOAD, 1, 0)])
    assert got[0]["fault"] == FaultKind.PAGE


def test_nonleaf_at_level0_and_invalid_root_entry():
    def setup(mem):
        pt = PageTables(mem)
        a0 = pt.pte_addr(VA, 0)
        mem.write(a0, P.pte_table(0x999))      # a pointer at level 0
    got, _, _ = check_against_golden(setup, [(VA, LOAD, 1, 0), (VA ^ (1 << 35), LOAD, 1, 0)])
    assert got[0]["fault"] == FaultKind.PAGE   # non-leaf at level 0
    assert got[1]["fault"] == FaultKind.PAGE   # V=0 at level 2


@pytest.mark.parametrize("va", [1 << 38, 0x0000_8000_0000_0000, (1 << 64) - (1 << 39)],
                         ids=["bit38-only", "bit47", "top-without-38"])
def test_non_canonical(va):
    got, mem = run_walks(_leaf(V | R | U | A), [(va, LOAD, 1, 0)])
    assert got[0]["fault"] == FaultKind.PAGE
    assert not mem.log, "a non-canonical VA must not touch memory"


def test_canonical_upper_half():
    va = ((1 << 64) - (1 << 38)) | 0x1000

    def setup(mem):
        PageTables(mem).map(va, 0x777, flags=V | R | A)
    got, _, _ = check_against_golden(setup, [(va, LOAD, 0, 0)])
    assert got[0]["fault"] == FaultKind.NONE and got[0]["paddr"] == 0x777000


@pytest.mark.parametrize("level", [2, 1, 0])
def test_bus_error_on_pte_read_is_access_fault(level):
    def setup(mem):
        pt = PageTables(mem)
        pt.map(VA, 0x12345, flags=V | R | U | A)
        mem.err_addrs.add(pt.pte_addr(VA, level))
    got, _, _ = check_against_golden(setup, [(VA, LOAD, 1, 0)])
    assert got[0]["fault"] == FaultKind.ACCESS


def test_bus_error_on_cas_is_access_fault():
    wk_setup = _leaf(V | R | W | U)
    wk = PageWalker()
    mem = MemModel(wk.mem)
    wk_setup(mem)
    leaf = PageTables(mem).pte_addr(VA, 0)
    mem.err_addrs.add(leaf)
    mem.err_ops = {MemOp.CAS}
    out = []

    async def bench(ctx):
        out.append(await hw_walk(ctx, wk, VA, STORE))
    run_sim(wk, bench, background=[mem.run])
    assert out[0]["fault"] == FaultKind.ACCESS
    assert mem.read(leaf) & (A | D) == 0


@pytest.mark.parametrize("flags,op", [(V | R | U, LOAD), (V | R | W | U | A, STORE)],
                         ids=["A=0 load", "D=0 store"])
def test_svade_faults_instead_of_update(flags, op):
    got, _, mem = check_against_golden(_leaf(flags), [(VA, op, 1, 0)], svadu=False)
    assert got[0]["fault"] == FaultKind.PAGE
    assert not any(o == MemOp.CAS for o, *_ in mem.log)


def test_load_leaves_d_clear_and_no_update_when_a_set():
    got, _, mem = check_against_golden(_leaf(V | R | W | U | A), [(VA, LOAD, 1, 0)])
    assert got[0]["fault"] == FaultKind.NONE
    assert not got[0]["pte"] & D
    assert not any(o != MemOp.READ for o, *_ in mem.log), "no write when A is already set"


# --- the CAS retry path ---------------------------------------------------------------------

def _race(change, **quirks):
    """Walk a STORE to a clean page; after the walker's first read of the leaf, software
    changes the PTE with ``change(old) -> new``.  Returns (result, leaf value, mem)."""
    wk = PageWalker(**quirks)
    mem = MemModel(wk.mem, latency=2)
    pt = PageTables(mem)
    leaf = pt.map(VA, 0x12345, flags=V | R | W | U)
    done = []

    def hook(model, op, rdata):
        if op == MemOp.READ and not done:
            done.append(1)
            model.write(leaf, change(rdata))
        return not done
    mem.after(leaf, hook)
    out = []

    async def bench(ctx):
        out.append(await hw_walk(ctx, wk, VA, STORE))
    run_sim(wk, bench, background=[mem.run])
    return out[0], mem.read(leaf), mem


def test_cas_mismatch_restarts_from_root():
    # Software sets A between the read and the CAS (e.g. another walker): retry, then succeed.
    res, leaf, mem = _race(lambda old: old | A)
    assert res["fault"] == FaultKind.NONE
    assert res["cas_retry"] == 1
    assert leaf == P.pfn_pte(0x12345, V | R | W | U | A | D)
    cas = [e for e in mem.log if e[0] == MemOp.CAS]
    assert len(cas) == 2 and cas[0][4] != cas[0][3] and cas[1][4] == cas[1][3]
    reads = [e for e in mem.log if e[0] == MemOp.READ]
    assert len(reads) == 6, "the restart must read all three levels again"
    assert res["a_set"] == 0 and res["d_set"] == 1


def test_cas_mismatch_after_unmap_faults_and_writes_nothing():
    res, leaf, _ = _race(lambda old: 0)
    assert res["fault"] == FaultKind.PAGE
    assert res["cas_retry"] == 1
    assert leaf == 0, "a stale PTE must never be written back"


def test_cas_mismatch_after_wrprotect():
    res, leaf, _ = _race(lambda old: old & ~W)
    assert res["fault"] == FaultKind.PAGE
    assert leaf == P.pfn_pte(0x12345, V | R | U)


def test_quirk_plain_ad_write_resurrects_cleared_pte():
    res, leaf, mem = _race(lambda old: 0, quirk_plain_ad_write=True)
    assert res["fault"] == FaultKind.NONE
    assert leaf == P.pfn_pte(0x12345, V | R | W | U | A | D), "the bug: stale value written"
    assert any(e[0] == MemOp.WRITE for e in mem.log)
    # ...and with the quirk off the same race leaves the PTE cleared (see the test above).
    res, leaf, _ = _race(lambda old: 0, quirk_plain_ad_write=False)
    assert leaf == 0


def test_quirk_ad_on_nonpresent_sets_bits_on_cleared_pte():
    res, leaf, _ = _race(lambda old: 0, quirk_ad_on_nonpresent=True)
    assert leaf == A | D, "the bug (KNL4): A/D land on a PTE software cleared"
    assert P.pte_none(leaf) and not P.pte_present(leaf)
    res, leaf, _ = _race(lambda old: 0, quirk_ad_on_nonpresent=False)
    assert leaf == 0


# --- random tables against the golden model ---------------------------------------------------

def random_space(rng, nmaps=6):
    """A setup function and a list of accesses over random 4K/2M/1G mappings with random
    (sometimes illegal) flags."""
    maps = []
    for i in range(nmaps):
        level = rng.choice([0, 0, 0, 1, 2])
        va = (rng.randrange(1 << 27) << 12) & ~((1 << (12 + 9 * level)) - 1)
        va &= (1 << 38) - 1
        flags = V | rng.choice([R, R | W, R | X, X, R | W | X, W]) \
            | (U if rng.random() < 0.8 else 0) | (A if rng.random() < 0.5 else 0) \
            | (D if rng.random() < 0.3 else 0) | (G if rng.random() < 0.1 else 0)
        if rng.random() < 0.05:
            flags &= ~V
        ppn = rng.randrange(1, 1 << 20) << (9 * level)
        if rng.random() < 0.1 and level:
            ppn |= 1                                  # misaligned superpage
        maps.append((va, ppn, level, flags))

    def setup(mem):
        pt = PageTables(mem)
        for va, ppn, level, flags in maps:
            a = pt.pte_addr(va, level)
            if P.pte_present(mem.read(a)) and not P.pte_leaf(mem.read(a)):
                continue        # keep an existing table pointer
            mem.write(a, P.pfn_pte(ppn, flags & 0xFF))
    accesses = []
    for _ in range(12):
        va, ppn, level, flags = rng.choice(maps)
        off = rng.randrange(1 << (12 + 9 * level))
        if rng.random() < 0.1:
            off = rng.randrange(1 << 30)               # sometimes unmapped
        accesses.append(((va + off) & ((1 << 38) - 1), rng.choice(list(AccessType)),
                         int(rng.random() < 0.7), int(rng.random() < 0.5)))
    return setup, accesses


@pytest.mark.parametrize("seed", range(4))
def test_random_walks_match_golden(seed):
    rng = random.Random(seed)
    setup, accesses = random_space(rng)
    check_against_golden(setup, accesses, svadu=bool(seed % 2 == 0), latency=(1, 3), seed=seed)


def test_golden_comparison_catches_a_mismatch():
    # The RTL walks with Svade, the golden walk with Svadu: a load of an A=0 page differs.
    def setup(mem):
        PageTables(mem).map(VA, 0x12345, flags=V | R | U)
    golden_mem = MemModel(None)
    setup(golden_mem)
    read, cas, _ = golden_mem.golden_ports()
    expect = sv39_walk(read, cas, VA, LOAD, user=True, sum=False, root=0x80, svadu=True)
    got, _ = run_walks(setup, [(VA, LOAD, 1, 0)], svadu=False)
    assert expect.fault == FaultKind.NONE and got[0]["fault"] == FaultKind.PAGE
    with pytest.raises(AssertionError):
        check_against_golden(setup, [(VA, LOAD, 1, 0)], svadu=True, _rtl_svadu=False)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 140))
def test_random_walks_match_golden_long(seed):
    rng = random.Random(seed)
    setup, accesses = random_space(rng, nmaps=12)
    check_against_golden(setup, accesses, svadu=bool(seed % 2 == 0), latency=(1, 4), seed=seed)


def test_walker_parameter_errors():
    with pytest.raises(TypeError, match=r"^svadu must be a bool, not 1$"):
        PageWalker(svadu=1)
    with pytest.raises(TypeError, match=r"^quirk_plain_ad_write must be a bool, not 'yes'$"):
        PageWalker(quirk_plain_ad_write="yes")
