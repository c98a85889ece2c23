"""Tlb on its own: replacement policies (PLRU order, FIFO order, the LFSR reaching every way),
the superpage array of a set-associative TLB, direct-mapped conflicts, first-match drop."""

from __future__ import annotations

import pytest

from hdl.layouts import tlb_entry_to_arch
from hdl.tlb import Tlb
from test_hdl_memmodel import run_sim

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


async def fill(ctx, tlb, vpn, *, ppn=None, level=0, asid=0, g=0):
    e = tlb.fill.entry
    ctx.set(e.vpn, vpn)
    ctx.set(e.ppn, vpn + 0x1000 if ppn is None else ppn)
    ctx.set(e.level, level)
    ctx.set(e.asid, asid)
    ctx.set(e.g, g)
    ctx.set(e.r, 1)
    ctx.set(e.a, 1)
    ctx.set(tlb.fill.replace, 1)
    ctx.set(tlb.fill.valid, 1)
    await ctx.tick()
    ctx.set(tlb.fill.valid, 0)


async def lookup(ctx, tlb, vpn, *, asid=0, touch=1, drop=0):
    lk = tlb.lookup
    ctx.set(lk.vpn, vpn)
    ctx.set(lk.asid, asid)
    ctx.set(lk.valid, 1)
    ctx.set(lk.touch, touch)
    ctx.set(lk.drop, drop)
    hit, ppn = ctx.get(lk.hit), ctx.get(lk.entry.ppn)
    await ctx.tick()
    ctx.set(lk.valid, 0)
    ctx.set(lk.drop, 0)
    return hit, ppn


def slots(ctx, tlb):
    """vpn held by each entry register (None when invalid), main array then superpages."""
    out = []
    for sig in tlb.entry_signals:
        e = tlb_entry_to_arch(9, ctx.get(sig.as_value()))
        out.append(None if e is None else e.vpn)
    return out


def test_plru_victim_follows_use():
    tlb = Tlb(entries=4, replacement="plru")
    out = {}

    async def bench(ctx):
        for vpn in (0xA, 0xB, 0xC, 0xD):
            await fill(ctx, tlb, vpn)
        await lookup(ctx, tlb, 0xA)      # A used again: the tree now points at C
        await fill(ctx, tlb, 0xE)
        out["slots"] = slots(ctx, tlb)
    run_sim(tlb, bench)
    assert out["slots"] == [0xA, 0xB, 0xE, 0xD]


def test_fifo_order_ignores_use():
    tlb = Tlb(entries=4, replacement="fifo")
    out = {}

    async def bench(ctx):
        for vpn in (0xA, 0xB, 0xC, 0xD):
            await fill(ctx, tlb, vpn)
        await lookup(ctx, tlb, 0xA)
        await fill(ctx, tlb, 0xE)
        await fill(ctx, tlb, 0xF)
        out["slots"] = slots(ctx, tlb)
    run_sim(tlb, bench)
    assert out["slots"] == [0xE, 0xF, 0xC, 0xD]


@pytest.mark.parametrize("entries", [4, 6])
def test_random_replacement_reaches_every_way(entries):
    tlb = Tlb(entries=entries, replacement="random")
    replaced = set()
    order = []

    async def bench(ctx):
        for vpn in range(entries):
            await fill(ctx, tlb, vpn)
        for vpn in range(100, 140):
            before = slots(ctx, tlb)
            await fill(ctx, tlb, vpn)
            after = slots(ctx, tlb)
            (way,) = [i for i in range(entries) if before[i] != after[i]]
            replaced.add(way)
            order.append(way)
    run_sim(tlb, bench)
    assert replaced == set(range(entries))
    assert order != [i % entries for i in range(len(order))], "not just round robin"


def test_superpages_live_in_their_own_array():
    tlb = Tlb(entries=8, ways=2, superpage_entries=2)
    out = {}

    async def bench(ctx):
        await fill(ctx, tlb, 0x200, level=1, ppn=0x400)          # 2 MiB
        await fill(ctx, tlb, 0x40000, level=2, ppn=0x40000)      # 1 GiB
        await fill(ctx, tlb, 0x5, ppn=0x77)                      # 4 KiB, set 1
        out["slots"] = slots(ctx, tlb)
        out["hit2m"] = await lookup(ctx, tlb, 0x3ff)
        out["hit1g"] = await lookup(ctx, tlb, 0x7ffff)
        out["hit4k"] = await lookup(ctx, tlb, 0x5)
        out["miss"] = await lookup(ctx, tlb, 0x6)
    run_sim(tlb, bench)
    main, sp = out["slots"][:8], out["slots"][8:]
    assert sp == [0x200, 0x40000]
    assert main == [None, None, 0x5, None, None, None, None, None], "set 1, way 0"
    assert out["hit2m"] == (1, 0x400) and out["hit1g"] == (1, 0x40000)
    assert out["hit4k"] == (1, 0x77) and out["miss"][0] == 0


def test_direct_mapped_conflict():
    tlb = Tlb(entries=4, ways=1, superpage_entries=2, replacement="fifo")
    out = {}

    async def bench(ctx):
        await fill(ctx, tlb, 0x1)
        await fill(ctx, tlb, 0x5)           # same set (vpn & 3 == 1): evicts 0x1
        await fill(ctx, tlb, 0x2)
        out["slots"] = slots(ctx, tlb)
        out["old"] = await lookup(ctx, tlb, 0x1)
    run_sim(tlb, bench)
    assert out["slots"][:4] == [None, 0x5, 0x2, None]
    assert out["old"][0] == 0


def test_drop_removes_only_the_first_match_and_fill_replaces_same_page():
    tlb = Tlb(entries=4)
    out = {}

    async def bench(ctx):
        await fill(ctx, tlb, 0x200, level=1, ppn=0x400)   # 2 MiB covering vpn 0x201
        await fill(ctx, tlb, 0x201, ppn=0x99)             # 4 KiB inside it
        await lookup(ctx, tlb, 0x201, drop=1)             # drops the first match (slot 0)
        out["after_drop"] = slots(ctx, tlb)
        await fill(ctx, tlb, 0x201, ppn=0x98, asid=5, g=1)  # same page, global: replaces
        out["after_fill"] = slots(ctx, tlb)
        out["ppn"] = await lookup(ctx, tlb, 0x201, asid=7)
    run_sim(tlb, bench)
    assert out["after_drop"] == [None, 0x201, None, None]
    assert out["after_fill"] == [None, 0x201, None, None]
    assert out["ppn"] == (1, 0x98)
