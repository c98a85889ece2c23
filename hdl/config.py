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
from pyrmap.replacement import REPLACEMENT_POLICIES

__all__ = ["MmuConfig", "MMUS", "mmu_params", "REPLACEMENTS", "ARBITRATIONS", "MAX_CORES", "MAX_TLB_ENTRIES",
           "MAX_TLB_WAYS", "check_tlb_geometry"]

#: The replacement policies (pyrmap.replacement, shared with the golden model).
REPLACEMENTS = tuple(REPLACEMENT_POLICIES)
ARBITRATIONS = ("round_robin", "fixed")
#: The core MMUs Top can be built with: ours (hdl.core.CoreMmu) or CVA6's Sv39 MMU behind the
#: shim of hdl.cva6 (Verilator only; Svade; fully associative PLRU TLBs; no hardware quirks).
MMUS = ("ours", "cva6")


def mmu_params(mmu: str) -> dict:
    """The ``MmuConfig`` parameters that select core MMU ``mmu`` (a name of :data:`MMUS`):
    CVA6's brings the Svade mode it has.  ``ValueError`` for another name."""
    if mmu not in MMUS:
        raise ValueError(f"mmu must be one of {', '.join(repr(x) for x in MMUS)}, not {mmu!r}")
    return {} if mmu == "ours" else {"mmu": mmu, "svadu": False}
#: Upper bounds on sizes.  TLB entries are registers compared in parallel, so elaboration,
#: export and simulator builds grow with them (a 4-way TLB of 256 entries takes ~30 s to export,
#: 1024 entries ~2 min, before a compile of several minutes).
MAX_CORES = 16
MAX_TLB_ENTRIES = 256
MAX_TLB_WAYS = 64
MAX_SUPERPAGE_ENTRIES = 64
MAX_DEV_ENTRIES = 64
_SIZE_REASON = "TLB entries are registers compared in parallel; larger arrays take minutes " \
               "to export and build"

# Bump when the generated hardware changes in a way the parameters do not capture.
HDL_REVISION = 2


def _check_int(name, value, minimum=1, maximum=None, reason=_SIZE_REASON):
    """``TypeError`` unless ``value`` is an int (not a bool); ``ValueError`` outside the range."""
    kind = "a positive" if minimum == 1 else "a non-negative"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be {kind} integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {kind} integer, not {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value} ({reason})")


def _is_pow2(n):
    return n > 0 and (n & (n - 1)) == 0


def check_replacement(replacement, name="replacement"):
    if replacement not in REPLACEMENTS:
        raise ValueError(f"{name} must be one of "
                         f"{', '.join(repr(r) for r in REPLACEMENTS)}, not {replacement!r}")


def check_tlb_geometry(entries, ways, replacement, superpage_entries=None, what="TLB",
                       names=("entries", "ways", "replacement", "superpage_entries")):
    """Validate a TLB's shape; raise ``TypeError``/``ValueError`` in Amaranth's voice.

    ``names`` are the parameter names the caller exposes (``Tlb``'s own, or ``MmuConfig``'s
    ``tlb_entries``...), used in the messages.
    """
    n_entries, n_ways, n_repl, n_sp = names
    _check_int(n_entries, entries, maximum=MAX_TLB_ENTRIES)
    _check_int(n_ways, ways, maximum=MAX_TLB_WAYS)
    check_replacement(replacement, n_repl)
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
    policy = REPLACEMENT_POLICIES[replacement]
    if policy.pow2_ways and not _is_pow2(ways):
        raise ValueError(f"{policy.label} replacement needs a power-of-two number of ways, "
                         f"not {ways}")
    if superpage_entries is not None and sets > 1:
        _check_int(n_sp, superpage_entries, maximum=MAX_SUPERPAGE_ENTRIES)
        if policy.pow2_ways and not _is_pow2(superpage_entries):
            raise ValueError(f"{policy.label} replacement needs a power-of-two number of "
                             f"superpage entries, not {superpage_entries}")


def check_asid_bits(asid_bits, name="asid_bits"):
    _check_int(name, asid_bits, minimum=0, maximum=ASID_BITS_MAX,
               reason=f"satp.ASID has {ASID_BITS_MAX} bits")


def check_device_entries(entries, name="dev_entries"):
    _check_int(name, entries, maximum=MAX_DEV_ENTRIES)


def _parse_text_value(name, text, kind):
    if kind == "bool":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be a bool (true/false, yes/no, 1/0), not {text!r}")
    if kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"{name} must be an integer, not {text!r}") from None
    return text


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
        A name of :data:`pyrmap.replacement.REPLACEMENT_POLICIES`: ``"plru"``, ``"random"``
        (LFSR) or ``"fifo"``.
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
    quirk_walk_answer_after_inval : bool
        A walk in flight when an invalidation is applied answers after the ack with what it
        read before (its fill is dropped, it is not restarted).
    quirk_inval_clear_late : bool
        The cores' and the device's TLBs clear invalidated entries one cycle after the ack
        cycle (a request accepted in the ack cycle hits one).
    mmu : str
        The core MMU: ``"ours"`` (:class:`hdl.core.CoreMmu`) or ``"cva6"`` (CVA6's Sv39 MMU
        behind :class:`hdl.cva6.Cva6CoreMmu`), which needs ``svadu=False``, ``tlb_ways ==
        tlb_entries`` (a power of two), ``replacement="plru"`` and no quirk.
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
    quirk_walk_answer_after_inval: bool = False
    quirk_inval_clear_late: bool = False
    mmu: str = "ours"

    def __post_init__(self):
        _check_int("ncores", self.ncores, maximum=MAX_CORES,
                   reason="the memory arbiter serves at most 16 cores")
        check_tlb_geometry(self.tlb_entries, self.tlb_ways, self.replacement,
                           self.superpage_entries,
                           names=("tlb_entries", "tlb_ways", "replacement", "superpage_entries"))
        check_asid_bits(self.asid_bits)
        check_device_entries(self.dev_entries, "dev_entries")
        if not _is_pow2(self.dev_entries):
            raise ValueError(f"Device TLB has {self.dev_entries} entries, which is not a power "
                             f"of two (PLRU replacement)")
        if self.arbitration not in ARBITRATIONS:
            raise ValueError(f"arbitration must be one of "
                             f"{', '.join(repr(a) for a in ARBITRATIONS)}, not "
                             f"{self.arbitration!r}")
        for f in dataclasses.fields(self):
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise TypeError(f"{f.name} must be a bool, not {getattr(self, f.name)!r}")
        if self.mmu not in MMUS:
            raise ValueError(f"mmu must be one of {', '.join(repr(x) for x in MMUS)}, not "
                             f"{self.mmu!r}")
        if self.mmu == "cva6":
            self._check_cva6()

    def _check_cva6(self):
        """The parameters CVA6's MMU has (``ValueError`` naming the one it lacks)."""
        rules = [
            (self.svadu, "svadu", self.svadu, "CVA6 sets no A/D bits in hardware (Svade): "
                                              "use svadu=False"),
            (self.tlb_ways != self.tlb_entries, "tlb_ways", self.tlb_ways,
             "CVA6's TLBs are fully associative: tlb_ways must equal tlb_entries"),
            (self.tlb_entries < 2 or not _is_pow2(self.tlb_entries), "tlb_entries",
             self.tlb_entries, "CVA6's PLRU TLB needs a power of two of at least 2"),
            (self.replacement != "plru", "replacement", self.replacement,
             "CVA6's TLBs replace by PLRU"),
        ]
        rules += [(getattr(self, f.name), f.name, True,
                   "hardware quirks are switches of our MMU, not of CVA6's")
                  for f in dataclasses.fields(self) if f.name.startswith("quirk_")]
        for bad, name, value, why in rules:
            if bad:
                raise ValueError(f"{name}={value!r} is not possible with mmu='cva6': {why}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def config_hash(self) -> str:
        """A stable 12-hex-digit hash of the parameters and the hardware revision."""
        params = self.as_dict()
        if params["mmu"] == "ours":
            del params["mmu"]          # the hashes of our MMU's configurations predate the field
        blob = json.dumps({"rev": HDL_REVISION, **params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes) -> "MmuConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, **params) -> "MmuConfig":
        """The configuration of keyword parameters, as every command line builds it.

        An unknown name is a ``ValueError`` that lists the known ones.  ``tlb_ways`` defaults
        to ``tlb_entries`` (fully associative) when only ``tlb_entries`` is given, the same
        rule for ``run --tlb-entries``, litmus ``--config tlb_entries=`` and ``hdl.export``.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        for name in params:
            if name not in known:
                raise ValueError(f"Unknown parameter {name!r}; known: {', '.join(known)}")
        if "tlb_entries" in params and "tlb_ways" not in params:
            params = dict(params, tlb_ways=params["tlb_entries"])
        return cls(**params)

    @classmethod
    def parse_params(cls, text: str) -> dict:
        """``"k=v,k=v"`` as parameters, each value converted to its field's type.

        Raises
        ------
        ValueError
            An item without ``=``, an unknown name (the known ones are listed), or a value
            that is not of its parameter's type.
        """
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        params = {}
        for item in filter(None, (i.strip() for i in text.split(","))):
            name, eq, value = item.partition("=")
            name = name.strip()
            if not eq:
                raise ValueError(f"Parameter {item!r} has no value (write {name}=VALUE)")
            if name not in kinds:
                raise ValueError(f"Unknown parameter {name!r}; known: {', '.join(kinds)}")
            params[name] = _parse_text_value(name, value.strip(), kinds[name])
        return params
