"""What a fast-path run saw, saved for the golden model's replay: the stream of every core.

:class:`StreamRecorder` is fed by :class:`cosim.fastrun.FastRun` when ``FAST_STREAM`` names a
file: every drained access-log record (start and done cycles, VA, PA, op, fault, hit), the
leaf PTE address of each record's page, every PTE value the software port wrote (with its
cycle) and every invalidation a core acknowledged (with its cycle).  :meth:`save` writes them
as one ``.npz``; :func:`load_stream` reads it back as a :class:`Stream`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pyrmap.checkers import lookup_pte

__all__ = ["StreamRecorder", "Stream", "load_stream", "RECORD_KEYS"]

#: The per-record arrays of a stream (one entry per access-log record).
RECORD_KEYS = ("core", "start", "done", "va", "pa", "op", "fault", "hit", "squashed", "ptep")
#: Per-record arrays of small values, stored as bytes and read back as int64.
SMALL_KEYS = ("core", "op", "fault", "hit", "squashed")


class StreamRecorder:
    """Collects one run's records, PTE writes and acknowledged invalidations.

    Parameters
    ----------
    mem : PhysMem
        The engine's memory (leaf PTE addresses are looked up in it when a record is drained).
    """

    def __init__(self, mem):
        self.mem = mem
        self.parts: list[dict] = []
        self.pte_writes: list[tuple[int, int, int]] = []
        self.invals: list[tuple[int, int, int, int, int]] = []
        self.cores: dict[int, tuple[int, int]] = {}
        self.resumes: list[tuple[int, int]] = []
        self._leaf: dict[tuple[int, int], int] = {}

    def records(self, core: int, rec: dict, asid: int, root: int) -> None:
        """``rec``: the decoded fields of ``core``'s drained records (numpy arrays)."""
        self.cores[core] = (asid, root)
        n = len(rec["va"])
        if not n:
            return
        va = np.asarray(rec["va"]).astype(np.uint64)
        # One page-table lookup per page of the batch, not per record.
        vpns, inverse = np.unique(va >> np.uint64(12), return_inverse=True)
        table = np.empty(len(vpns), dtype=np.int64)
        for k, vpn in enumerate(vpns.tolist()):
            key = (root, vpn)
            ptep = self._leaf.get(key)
            if ptep is None:
                found, _, level = lookup_pte(self.mem, root, vpn << 12)
                ptep = -1 if found is None or level != 0 else found
                if ptep >= 0:
                    self._leaf[key] = ptep
            table[k] = ptep
        pteps = table[inverse.reshape(-1)]
        part = {key: np.asarray(rec[key]).astype(np.int64) for key in
                ("start", "done", "pa", "op", "fault", "hit", "squashed")}
        part["va"] = va
        part["core"] = np.full(n, core, dtype=np.int64)
        part["ptep"] = pteps
        self.parts.append(part)

    def pte_write(self, ptep: int, cycle: int, old: int, new: int) -> None:
        self.pte_writes.append((ptep, cycle, new))

    def acked(self, core: int, cycle: int, kind, va: int, asid: int) -> None:
        """``core`` acknowledged the invalidation (kind, va, asid) at ``cycle``."""
        self.invals.append((core, cycle, int(kind), va, asid))

    def resumed(self, core: int, cycle: int) -> None:
        """``core``'s engine left its fault stop at ``cycle`` (it issues the access again)."""
        self.resumes.append((core, cycle))

    def tables_changed(self) -> None:
        self._leaf.clear()

    def save(self, path) -> None:
        out = {}
        for key in RECORD_KEYS:
            arrays = [p[key] for p in self.parts]
            out[key] = (np.concatenate(arrays) if arrays
                        else np.zeros(0, np.uint64 if key == "va" else np.int64))
        pw = np.array(self.pte_writes, dtype=np.uint64).reshape(-1, 3)
        out["pte_ptep"], out["pte_cycle"], out["pte_value"] = (pw[:, 0].astype(np.int64),
                                                               pw[:, 1].astype(np.int64),
                                                               pw[:, 2])
        iv = np.array(self.invals, dtype=np.int64).reshape(-1, 5)
        for i, key in enumerate(("inval_core", "inval_cycle", "inval_kind", "inval_va",
                                 "inval_asid")):
            out[key] = iv[:, i]
        rs = np.array(self.resumes, dtype=np.int64).reshape(-1, 2)
        out["resume_core"], out["resume_cycle"] = rs[:, 0], rs[:, 1]
        cores = sorted(self.cores)
        out["core_asid"] = np.array([self.cores[c][0] for c in cores], dtype=np.int64)
        out["core_root"] = np.array([self.cores[c][1] for c in cores], dtype=np.int64)
        for key in SMALL_KEYS:
            out[key] = out[key].astype(np.uint8)
        # Uncompressed: deflating a 10^6-record stream costs seconds of CPU, and the
        # cross-checks read it back at once.
        np.savez(path, **out)


@dataclass
class Stream:
    """A saved stream: ``arrays`` keyed as :meth:`StreamRecorder.save` wrote them."""
    arrays: dict

    def __getitem__(self, key):
        return self.arrays[key]

    def __len__(self) -> int:
        return len(self.arrays["va"])


def load_stream(path) -> Stream:
    with np.load(path) as z:
        return Stream({k: z[k].astype(np.int64) if k in SMALL_KEYS else z[k]
                       for k in z.files})
