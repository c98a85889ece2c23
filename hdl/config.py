"""The parameters of :class:`hdl.top.Top`, validated once, with a stable hash.

``MmuConfig`` is what ``python -m hdl.export`` and the cocotb build cache key on: two equal
configurations produce byte-identical Verilog in ``sim_build/<config_hash>/top.v``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from pyrmap.pte import ASID_BITS_MAX

__all__ = ["MmuConfig", "REPLACEMENTS", "ARBITRATIONS", "check_tlb_geometry"]

REPLACEMENTS = ("plru", "random", "fifo")
ARBITRATIONS = ("round_robin", "fixed")
MAX_CORES = 16

# Bump when the generated hardware changes in a way the parameters do not capture.
HDL_REVISION = 1


def _check_int(what, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise TypeError(f"{what} must be {kind} integer, not {value!r}")


def _is_pow2(n):
    return n > 0 and (n & (n - 1)) == 0


def check_replacement(replacement):
    if replacement not in REPLACEMENTS:
        raise ValueError(f"Replacement policy must be one of "
                         f"{', '.join(repr(r) for r in REPLACEMENTS)}, not {replacement!r}")


def check_tlb_geometry(entries, ways, replacement, superpage_entries=None, what="TLB"):
    """Validate a TLB's shape; raise ``TypeError``/``ValueError`` in Amaranth's voice."""
    _check_int("Entries", entries)
    _check_int("Ways", ways)
    check_replacement(replacement)
    if entries % ways:
        raise ValueError(f"{what} has {entries} entries, which is not a multiple of {ways} ways")
    sets = entries // ways
    if sets > 1:
        if not _is_pow2(sets):
            raise ValueError(f"{what} has {sets} sets ({entries} entries / {ways} ways), which "
                             f"is not a power of two")
        if not _is_pow2(ways):
            raise ValueError(f"Set-associative {what} has {ways} ways, which is not a power "
                             f"of two")
    if replacement == "plru" and not _is_pow2(ways):
        raise ValueError(f"PLRU replacement needs a power-of-two number of ways, not {ways}")
    if superpage_entries is not None and sets > 1:
        _check_int("Superpage entries", superpage_entries)
        if replacement == "plru" and not _is_pow2(superpage_entries):
            raise ValueError(f"PLRU replacement needs a power-of-two number of superpage "
                             f"entries, not {superpage_entries}")


def check_asid_bits(asid_bits):
    _check_int("ASID bits", asid_bits, minimum=0)
    if asid_bits > ASID_BITS_MAX:
        raise ValueError(f"ASID has {asid_bits} bits, which is more than the "
                         f"{ASID_BITS_MAX} bits of satp.ASID")


@dataclass(frozen=True)
class MmuConfig:
    """Parameters of :class:`hdl.top.Top` (see hdl/PORTS.md).

    Parameters
    ----------
    ncores : int
        Number of CoreMmus (1..16).
    tlb_entries, tlb_ways : int
        Per-core TLB geometry; ``tlb_ways == tlb_entries`` is fully associative, ``1`` direct
        mapped.  A set-associative TLB keeps 2 MiB / 1 GiB entries in a separate
        fully-associative array of ``superpage_entries``.
    replacement : str
        ``"plru"``, ``"random"`` (LFSR) or ``"fifo"``.
    asid_bits : int
        Width of the ASID tag (0..16).
    svadu : bool
        Hardware A/D update (True) or Svade page faults (False).
    dev_entries : int
        Entries of the (fully associative, PLRU) DeviceMmu TLB; a power of two.
    arbitration : str
        ``"round_robin"`` or ``"fixed"`` (core 0 first) for the MemArbiter.
    quirk_plain_ad_write, quirk_fill_after_inval, quirk_ad_on_nonpresent : bool
        Hardware bugs re-introduced on purpose (off by default).
    """
    ncores: int = 2
    tlb_entries: int = 8
    tlb_ways: int = 8
    replacement: str = "plru"
    superpage_entries: int = 4
    asid_bits: int = 9
    svadu: bool = True
    dev_entries: int = 8
    arbitration: str = "round_robin"
    quirk_plain_ad_write: bool = False
    quirk_fill_after_inval: bool = False
    quirk_ad_on_nonpresent: bool = False

    def __post_init__(self):
        _check_int("Core count", self.ncores)
        if self.ncores > MAX_CORES:
            raise ValueError(f"Top has {self.ncores} cores, which is more than {MAX_CORES}")
        check_tlb_geometry(self.tlb_entries, self.tlb_ways, self.replacement,
                           self.superpage_entries)
        check_asid_bits(self.asid_bits)
        _check_int("Device entries", self.dev_entries)
        if not _is_pow2(self.dev_entries):
            raise ValueError(f"Device TLB has {self.dev_entries} entries, which is not a power "
                             f"of two (PLRU replacement)")
        if self.arbitration not in ARBITRATIONS:
            raise ValueError(f"Arbitration must be one of "
                             f"{', '.join(repr(a) for a in ARBITRATIONS)}, not "
                             f"{self.arbitration!r}")
        for f in dataclasses.fields(self):
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise TypeError(f"{f.name} must be a bool, not {getattr(self, f.name)!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def config_hash(self) -> str:
        """A stable 12-hex-digit hash of the parameters and the hardware revision."""
        blob = json.dumps({"rev": HDL_REVISION, **self.as_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes) -> "MmuConfig":
        return dataclasses.replace(self, **changes)
