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
    n = len(stream)
    if n == 0:
        return {"verdict": "not exercised", "checked": 0, "detail": "the stream is empty"}
    core = stream["core"]
    ncores = int(core.max()) + 1
    asids = stream["core_asid"]
    tlbs = [Tlb(design["tlb_entries"], design["tlb_ways"], design["replacement"],
                design["asid_bits"], design["superpage_entries"], random.Random(0))
            for _ in range(ncores)]
    mask = (1 << design["asid_bits"]) - 1
    # (cycle, kind, index) for every event.
    ev = [np.stack([stream["start"], np.full(n, _LOOKUP), np.arange(n)], axis=1),
          np.stack([stream["done"], np.full(n, _FILL), np.arange(n)], axis=1),
          np.stack([stream["pte_cycle"], np.full(len(stream["pte_cycle"]), _PTE),
                    np.arange(len(stream["pte_cycle"]))], axis=1),
          np.stack([stream["inval_cycle"], np.full(len(stream["inval_cycle"]), _INVAL),
                    np.arange(len(stream["inval_cycle"]))], axis=1)]
    ev = np.concatenate(ev)
    ev = ev[np.lexsort((ev[:, 2], ev[:, 1], ev[:, 0]))]
    va, pa = stream["va"].astype(np.int64), stream["pa"]
    op, fault, hit, ptep = stream["op"], stream["fault"], stream["hit"], stream["ptep"]
    pte_ptep, pte_value = stream["pte_ptep"], stream["pte_value"]
    iv = (stream["inval_core"], stream["inval_kind"], stream["inval_va"], stream["inval_asid"])
    pte_val: dict[int, int] = {}
    hw_dirty: dict[int, bool] = {}
    model_hit = np.zeros(n, dtype=bool)
    bad: list[str] = []
    unknown = 0

    def lookup(i: int) -> bool:
        """The golden TLB's decision for record ``i``'s access (an entry that cannot serve it
        is dropped)."""
        c, o = int(core[i]), AccessType(int(op[i]))
        found = tlbs[c].lookup(int(va[i]), int(asids[c]))
        if found is None:
            return False
        arr, s, way, e = found
        served = (e.a and check_perm(e.perm, o, user=True, sum=False)
                  and (o != AccessType.STORE or e.d))
        if not served:
            arr.remove(s, way)
        return served

    def fill(i: int, walked_ok: bool) -> None:
        nonlocal unknown
        p = int(ptep[i])
        if not walked_ok:
            return
        if p < 0 or p not in pte_val:
            unknown += 1
            return
        c, v, o = int(core[i]), int(va[i]), AccessType(int(op[i]))
        pte = pte_val[p]
        d = o == AccessType.STORE or bool(pte & _PAGE_D) or hw_dirty.get(p, False)
        tlbs[c].fill(TlbEntry(vpn=v >> 12, asid=int(asids[c]) & mask,
                              ppn=int(pa[i]) >> 12, level=0, perm=pte & PERM_MASK,
                              g=bool(pte & _PAGE_G), a=True, d=d))
        if o == AccessType.STORE:
            hw_dirty[p] = True

    for cycle, kind, i in ev.tolist():
        if kind == _PTE:
            p = int(pte_ptep[i])
            pte_val[p] = int(pte_value[i])
            hw_dirty[p] = False
        elif kind == _INVAL:
            c = int(iv[0][i])
            if c < ncores:
                tlbs[c].inval(InvalKind(int(iv[1][i])), int(iv[2][i]), int(iv[3][i]))
        elif kind == _LOOKUP:
            served = model_hit[i] = lookup(i)
            if served != bool(hit[i]) and len(bad) < limit:
                bad.append(f"core {int(core[i])} record {i}: {AccessType(int(op[i])).name} of "
                           f"0x{int(va[i]):x} at cycle {cycle}: golden TLB "
                           f"{'hit' if served else 'miss'}, RTL {'hit' if hit[i] else 'miss'}")
        else:  # _FILL
            if not model_hit[i]:
                fill(i, fault[i] == FaultKind.NONE)
            elif op[i] == AccessType.STORE and ptep[i] >= 0:
                hw_dirty[int(ptep[i])] = True
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
    return out
