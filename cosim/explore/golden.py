"""The golden model's TLB (:class:`pyrmap.softarch.Tlb`) on the stream an RTL point ran.

Every record of every core (squashed attempts included: their lookups and fills happened) is
replayed, in cycle order, against one golden TLB per core with
the point's geometry, replacement and ASID width: a lookup at the cycle the MMU took the
request, a fill at the cycle of its data access when the golden TLB missed and the RTL did
not fault, and every invalidation at the cycle its core acknowledged it.  A filled entry
carries the leaf PTE as the walker saw it: the value the software port last wrote before the
request, Dirty also when an earlier store of the stream succeeded on it since, Accessed set
(the walk sets it, or faults under Svade).  The golden TLB decides hit or miss by the rules
of :mod:`pyrmap.softarch` (an entry that cannot serve the access is dropped and re-walked);
every decision must equal the RTL's ``hit`` bit.

``random`` replacement is not replayed (the RTL's LFSR advances every cycle; the model
matches it only in distribution): its verdict is "not exercised".
"""

from __future__ import annotations

import random

import numpy as np

from pyrmap.arch import InvalKind, TlbEntry
from pyrmap.pte import _PAGE_D, _PAGE_G, AccessType, FaultKind
from pyrmap.softarch import Tlb
from pyrmap.walk import PERM_MASK, check_perm

__all__ = ["golden_tlb_check", "EXACT_REPLACEMENTS"]

#: Replacement policies whose golden model matches the RTL entry for entry.
EXACT_REPLACEMENTS = ("plru", "fifo")

# Event kinds in the order they take effect within one cycle.
_PTE, _INVAL, _LOOKUP, _FILL = 0, 1, 2, 3


def golden_tlb_check(stream, design: dict, *, limit: int = 5) -> dict:
    """Replay ``stream`` (:class:`cosim.explore.stream.Stream`) through golden TLBs.

    Parameters
    ----------
    stream : Stream
    design : dict
        The point's MMU parameters (``tlb_entries``, ``tlb_ways``, ``replacement``,
        ``asid_bits``, ``superpage_entries``).
    limit : int
        Disagreements described in ``detail``.

    Returns
    -------
    dict
        ``{"verdict", "detail", "checked", "hits", "misses", "disagreements", ...}``:
        ``checked`` lookups compared (every record), ``hits``/``misses`` the golden TLB's over
        the accesses (squashed attempts and faults left out, as in the metrics); the verdict
        is "fail" on any disagreement, "not exercised" when nothing was compared.
    """
    if design["replacement"] not in EXACT_REPLACEMENTS:
        return {"verdict": "not exercised", "checked": 0,
                "detail": f"{design['replacement']} replacement: the RTL's LFSR advances every "
                          f"cycle, the golden model matches it only in distribution"}
    if len(stream) == 0:
        return {"verdict": "not exercised", "checked": 0, "detail": "the stream is empty"}
    skip = _repeats(stream)
    out, _ = _replay(stream, design, limit, skip)
    if out["disagreements"] and skip.any():
        # The repeats were taken as hits on the premise that the lookup each repeats was
        # one; with a disagreement somewhere the premise may not hold: replay every event.
        out, _ = _replay(stream, design, limit, None)
    return out


def _repeats(stream) -> np.ndarray:
    """The records whose lookup the replay may take as a hit without looking it up: the
    same page and operation as the core's lookup before it, both hits in the RTL, with no
    event between the two that changes that core's TLB (no invalidation of the core, no
    fill but the earlier record's own).  If the earlier lookup hit in the golden TLB too,
    this one finds the same entry, which serves the same operation again, and touches the
    way the replacement state made the most recent already: the TLB is left as it was.
    (:func:`golden_tlb_check` checks that premise: a replay with any disagreement is done
    again with every lookup.)"""
    n = len(stream)
    core = np.asarray(stream["core"], dtype=np.int64)
    start = np.asarray(stream["start"], dtype=np.int64)
    done = np.asarray(stream["done"], dtype=np.int64)
    # Each core's records in the order their lookups replay: by start cycle, then index.
    order = np.lexsort((np.arange(n), start, core))
    prev, cur = order[:-1], order[1:]
    page = np.asarray(stream["va"], dtype=np.uint64) >> np.uint64(12)
    hit = np.asarray(stream["hit"]).astype(bool)
    rep = ((core[prev] == core[cur]) & (page[prev] == page[cur])
           & (stream["op"][prev] == stream["op"][cur]) & hit[prev] & hit[cur])
    # Every fill of the core's earlier records lands before prev's lookup: the latest data
    # access of the records before prev on its core (a running maximum per core) came
    # before prev's start.
    core_o = core[order]
    shift = np.int64(1) << np.int64(42)              # above any cycle (40-bit counters)
    latest = np.maximum.accumulate(done[order] + core_o * shift) - core_o * shift
    first = np.concatenate([[True], core_o[1:] != core_o[:-1]])
    # For the record at position k of the order (k >= 1): the latest done before it.
    latest_before = np.where(first[:-1], -1, np.concatenate([[-1], latest[:-2]]))
    rep &= latest_before < start[prev]
    # No invalidation of the core acknowledged in (start[prev], start[cur]].
    ic = np.asarray(stream["inval_core"], dtype=np.int64)
    icyc = np.asarray(stream["inval_cycle"], dtype=np.int64)
    for c in np.unique(core[cur[rep]]).tolist():
        cyc = np.sort(icyc[ic == c])
        if len(cyc):
            mine = rep & (core[cur] == c)
            between = (np.searchsorted(cyc, start[cur[mine]], side="right")
                       - np.searchsorted(cyc, start[prev[mine]], side="right"))
            rep[np.flatnonzero(mine)[between > 0]] = False
    out = np.zeros(n, dtype=bool)
    out[cur[rep]] = True
    return out


def _replay(stream, design: dict, limit: int, skip) -> tuple[dict, np.ndarray]:
    """The replay of :func:`golden_tlb_check`: its result, and the golden TLB's hit or miss
    per record.  The records of ``skip`` (a mask, or None) are taken as hits without a
    lookup, their fills left out but for a store's Dirty."""
    n = len(stream)
    core = stream["core"]
    ncores = int(core.max()) + 1
    asids = stream["core_asid"]
    tlbs = [Tlb(design["tlb_entries"], design["tlb_ways"], design["replacement"],
                design["asid_bits"], design["superpage_entries"], random.Random(0))
            for _ in range(ncores)]
    mask = (1 << design["asid_bits"]) - 1
    # Every event as one integer, index << 2 | kind, in the order (cycle, kind, index): a
    # stable sort on cycle << 2 | kind of the events listed kind by kind, each in index order.
    cycles = [stream["start"], stream["done"], stream["pte_cycle"], stream["inval_cycle"]]
    kinds = (_LOOKUP, _FILL, _PTE, _INVAL)
    index = [np.arange(len(c), dtype=np.int64) for c in cycles]
    if skip is not None:
        # A skipped record's lookup goes; so does its fill, unless it is a store whose fill
        # marks the PTE dirty.
        keep_fill = ~skip | ((stream["op"] == AccessType.STORE) & (stream["ptep"] >= 0))
        index[0], index[1] = index[0][~skip], index[1][keep_fill]
    key = np.concatenate([(np.asarray(c, dtype=np.int64)[i] << 2) | k
                          for c, i, k in zip(cycles, index, kinds)])
    code = np.concatenate([(i << 2) | k for i, k in zip(index, kinds)])
    events = code[np.argsort(key, kind="stable")].tolist()
    hit = stream["hit"]
    # Python lists: one conversion, then plain indexing in the loop.
    va_l = stream["va"].astype(np.int64).tolist()
    pa_l = stream["pa"].tolist()
    op_l = stream["op"].tolist()
    core_l = core.tolist()
    fault_l = stream["fault"].tolist()
    hit_l = hit.tolist()
    ptep_l = stream["ptep"].tolist()
    pte_ptep, pte_value = stream["pte_ptep"].tolist(), stream["pte_value"].tolist()
    iv = [a.tolist() for a in (stream["inval_core"], stream["inval_kind"], stream["inval_va"],
                               stream["inval_asid"])]
    asid_l = [int(a) for a in asids]
    ops = {int(a): a for a in AccessType}
    store, no_fault = int(AccessType.STORE), int(FaultKind.NONE)
    pte_val: dict[int, int] = {}
    hw_dirty: dict[int, bool] = {}
    model_hit = [False] * n if skip is None else skip.tolist()
    bad: list[str] = []
    unknown = 0
    perm_ok: dict[tuple[int, int], bool] = {}
    # What Tlb.lookup returned for each page and operation a core looked up since its TLB
    # last changed, and whether that entry serves the operation: with no fill, removal or
    # invalidation on the core in between, a lookup of the same page finds the same entry
    # (the first that matches), so only its touch of the replacement state is repeated.  Any
    # fill, removal or invalidation on the core forgets them all.
    found_at: list[dict] = [{} for _ in range(ncores)]
    # The lookup result each core's TLB touched last: touching the same way again, with no
    # other touch of that TLB in between, leaves the replacement state as it is (a touch
    # makes its way the most recent, EXACT_REPLACEMENTS' models included), so a run of
    # lookups of one page touches once.
    touched: list = [None] * ncores
    start_l = stream["start"].tolist()

    def lookup(i: int) -> bool:
        """The golden TLB's decision for record ``i``'s access (an entry that cannot serve it
        is dropped)."""
        c, o = core_l[i], op_l[i]
        key = (va_l[i] >> 12) << 2 | o           # the page, and the operation in bits 1..0
        known = found_at[c]
        got = known.get(key)
        if got is None:
            found = tlbs[c].lookup(va_l[i], asid_l[c], touch=False)
            if found is None:
                served = False
            else:
                e = found[3]
                pk = (e.perm, o)
                ok = perm_ok.get(pk)
                if ok is None:
                    ok = perm_ok[pk] = check_perm(e.perm, ops[o], user=True, sum=False)
                served = e.a and ok and (o != store or e.d)
            got = known[key] = (found, served)
        found, served = got
        if found is None:
            return False
        if found is not touched[c]:
            found[0].policy.touch(found[1], found[2])
            touched[c] = found
        if not served:
            found[0].remove(found[1], found[2])
            known.clear()
        return served

    def fill(i: int) -> None:
        nonlocal unknown
        p = ptep_l[i]
        if p < 0 or p not in pte_val:
            unknown += 1
            return
        c, v, o = core_l[i], va_l[i], op_l[i]
        pte = pte_val[p]
        d = o == store or bool(pte & _PAGE_D) or hw_dirty.get(p, False)
        tlbs[c].fill(TlbEntry(vpn=v >> 12, asid=asid_l[c] & mask,
                              ppn=pa_l[i] >> 12, level=0, perm=pte & PERM_MASK,
                              g=bool(pte & _PAGE_G), a=True, d=d))
        found_at[c].clear()
        if o == store:
            hw_dirty[p] = True

    for ev in events:
        kind, i = ev & 3, ev >> 2
        if kind == _LOOKUP:
            served = model_hit[i] = lookup(i)
            if served != bool(hit_l[i]) and len(bad) < limit:
                bad.append(f"core {core_l[i]} record {i}: {ops[op_l[i]].name} of "
                           f"0x{va_l[i]:x} at cycle {start_l[i]}: golden TLB "
                           f"{'hit' if served else 'miss'}, RTL {'hit' if hit_l[i] else 'miss'}")
        elif kind == _FILL:
            if not model_hit[i]:
                if fault_l[i] == no_fault:
                    fill(i)
            elif op_l[i] == store and ptep_l[i] >= 0:
                hw_dirty[ptep_l[i]] = True
        elif kind == _PTE:
            p = pte_ptep[i]
            pte_val[p] = pte_value[i]
            hw_dirty[p] = False
        else:  # _INVAL
            c = iv[0][i]
            if c < ncores:
                tlbs[c].inval(InvalKind(iv[1][i]), iv[2][i], iv[3][i])
                found_at[c].clear()
    model_hit = np.array(model_hit, dtype=bool)
    fault = stream["fault"]
    disagreements = int((model_hit != hit.astype(bool)).sum())
    acc = (stream["squashed"] == 0) & (fault == FaultKind.NONE)
    out = {"checked": n, "squashed_attempts": int(stream["squashed"].sum()),
           "hits": int(model_hit[acc].sum()), "misses": int(acc.sum() - model_hit[acc].sum()), "disagreements": disagreements,
           "fills_without_pte": unknown}
    if disagreements:
        out["verdict"] = "fail"
        out["detail"] = (f"{disagreements} of {n} accesses disagree with the golden TLB; "
                         + "; ".join(bad))
    else:
        out["verdict"] = "pass"
        out["detail"] = (f"{n} lookups (squashed attempts and faults included), "
                         f"{out['hits']} hits of {out['hits'] + out['misses']} accesses: every "
                         f"decision equal")
    return out, model_hit
