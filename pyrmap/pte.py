"""The Sv39 page-table entry, defined once.

Every other part of the project (the engine, SoftArch, the Amaranth layouts in ``hdl``, the
cocotb memory model) takes the PTE format from here.  Nothing here imports a simulator.

Present PTE (V=1), RISC-V privileged spec, Sv39::

    63      54 53                 10 9   8 7 6 5 4 3 2 1 0
    reserved | PPN[2] PPN[1] PPN[0] | RSW | D A G U X W R V

Bits 54..63 (Svpbmt, Svnapot and reserved) must be zero in this implementation; a leaf or
non-leaf PTE with any of them set makes the walk raise a page fault.

Non-present PTE (V=0).  The hardware ignores every other bit; the software encodings are ours
and deliberately keep clear of A (bit 6) and D (bit 7), so that stray A/D bits set by a walker
that raced an unmap (the KNL4 erratum) never change what an entry decodes to::

    pte_none            all bits except A/D zero
    swap entry          bit 8 (SWP) = 1, type in bits 10..14, offset in bits 15..53
    migration entry     a swap entry of type SWP_MIGRATION_READ or SWP_MIGRATION_WRITE,
                        offset = pfn of the page being migrated
    file pte            bit 9 (FILE) = 1, file page offset (pgoff) in bits 10..53
                        (nonlinear mappings, remap_file_pages)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
PTE_SIZE = 8
PTRS_PER_PTE = 512
LEVELS = 3
VA_BITS = 39
PA_BITS = 56
PPN_BITS = 44
VPN_BITS = 27
ASID_BITS_MAX = 16  # satp.ASID is 16 bits in Sv39

# Leaf sizes by level: level 0 = 4 KiB, level 1 = 2 MiB, level 2 = 1 GiB.
LEVEL_SHIFT = (12, 21, 30)
LEVEL_SIZE = tuple(1 << s for s in LEVEL_SHIFT)

# Bit positions.
_PAGE_BIT_V = 0
_PAGE_BIT_R = 1
_PAGE_BIT_W = 2
_PAGE_BIT_X = 3
_PAGE_BIT_U = 4
_PAGE_BIT_G = 5
_PAGE_BIT_A = 6
_PAGE_BIT_D = 7
_PAGE_BIT_SWP = 8   # RSW[0]: non-present swap/migration entry
_PAGE_BIT_FILE = 9  # RSW[1]: non-present nonlinear file pte

_PAGE_V = 1 << _PAGE_BIT_V
_PAGE_R = 1 << _PAGE_BIT_R
_PAGE_W = 1 << _PAGE_BIT_W
_PAGE_X = 1 << _PAGE_BIT_X
_PAGE_U = 1 << _PAGE_BIT_U
_PAGE_G = 1 << _PAGE_BIT_G
_PAGE_A = 1 << _PAGE_BIT_A
_PAGE_D = 1 << _PAGE_BIT_D
_PAGE_SWP = 1 << _PAGE_BIT_SWP
_PAGE_FILE = 1 << _PAGE_BIT_FILE
_PAGE_RSW = _PAGE_SWP | _PAGE_FILE

PPN_SHIFT = 10
PPN_MASK = ((1 << PPN_BITS) - 1) << PPN_SHIFT
RESERVED_SHIFT = 54
RESERVED_MASK = ((1 << 10) - 1) << RESERVED_SHIFT
PTE_MASK = (1 << 64) - 1

# Swap entries.
SWP_TYPE_SHIFT = 10
SWP_TYPE_BITS = 5
SWP_OFFSET_SHIFT = 15
SWP_OFFSET_BITS = 54 - SWP_OFFSET_SHIFT
MAX_SWAPFILES = (1 << SWP_TYPE_BITS) - 2
SWP_MIGRATION_READ = MAX_SWAPFILES
SWP_MIGRATION_WRITE = MAX_SWAPFILES + 1
PGOFF_SHIFT = 10
PGOFF_BITS = 54 - PGOFF_SHIFT


class PteError(ValueError):
    """A PTE value or field that cannot be encoded or decoded."""


def _check_word(val: int) -> int:
    if not isinstance(val, int) or isinstance(val, bool):
        raise TypeError(f"PTE must be an int, not {val!r}")
    if val < 0 or val > PTE_MASK:
        raise PteError(f"PTE value {val:#x} does not fit in 64 bits")
    return val


# ---------------------------------------------------------------------------------------------
# Present PTEs.

def pte_present(val: int) -> bool:
    return bool(val & _PAGE_V)


def pte_none(val: int) -> bool:
    """True for an empty slot.  A and D are ignored (see the module docstring)."""
    return (val & ~(_PAGE_A | _PAGE_D)) == 0


def pte_leaf(val: int) -> bool:
    """A valid PTE with any of R, W, X is a leaf; V with none of them points to the next level."""
    return bool(val & _PAGE_V) and bool(val & (_PAGE_R | _PAGE_W | _PAGE_X))


def pte_pfn(val: int) -> int:
    return (val & PPN_MASK) >> PPN_SHIFT


def pte_young(val: int) -> bool:
    return bool(val & _PAGE_A)


def pte_dirty(val: int) -> bool:
    return bool(val & _PAGE_D)


def pte_write(val: int) -> bool:
    return bool(val & _PAGE_W)


def pte_user(val: int) -> bool:
    return bool(val & _PAGE_U)


def pte_global(val: int) -> bool:
    return bool(val & _PAGE_G)


def pte_mkyoung(val: int) -> int:
    return val | _PAGE_A


def pte_mkold(val: int) -> int:
    return val & ~_PAGE_A


def pte_mkdirty(val: int) -> int:
    return val | _PAGE_D


def pte_mkclean(val: int) -> int:
    return val & ~_PAGE_D


def pte_mkwrite(val: int) -> int:
    return val | _PAGE_W


def pte_wrprotect(val: int) -> int:
    return val & ~_PAGE_W


def pfn_pte(pfn: int, prot: int) -> int:
    """Build a PTE from a frame number and protection bits (V R W X U G A D)."""
    if not 0 <= pfn < (1 << PPN_BITS):
        raise PteError(f"PFN {pfn:#x} does not fit in {PPN_BITS} bits")
    if prot & ~0xFF:
        raise PteError(f"Protection {prot:#x} has bits outside V R W X U G A D")
    return (pfn << PPN_SHIFT) | prot


def pte_table(pfn: int) -> int:
    """A non-leaf PTE pointing to the page-table page at ``pfn``."""
    return pfn_pte(pfn, _PAGE_V)


def pte_flags(val: int) -> int:
    return val & 0xFF


# Protection sets used by the mm.
PAGE_NONE = 0
PAGE_READONLY = _PAGE_V | _PAGE_R | _PAGE_U
PAGE_SHARED = _PAGE_V | _PAGE_R | _PAGE_W | _PAGE_U
PAGE_EXEC = _PAGE_V | _PAGE_R | _PAGE_X | _PAGE_U


# ---------------------------------------------------------------------------------------------
# Non-present encodings.

def pte_is_swap(val: int) -> bool:
    return not pte_present(val) and bool(val & _PAGE_SWP)


def pte_file(val: int) -> bool:
    return not pte_present(val) and bool(val & _PAGE_FILE) and not (val & _PAGE_SWP)


@dataclass(frozen=True)
class SwpEntry:
    type: int
    offset: int


def swp_entry(type_: int, offset: int) -> SwpEntry:
    if not 0 <= type_ <= SWP_MIGRATION_WRITE:
        raise PteError(f"Swap type {type_} out of range 0..{SWP_MIGRATION_WRITE}")
    if not 0 <= offset < (1 << SWP_OFFSET_BITS):
        raise PteError(f"Swap offset {offset:#x} does not fit in {SWP_OFFSET_BITS} bits")
    return SwpEntry(type_, offset)


def swp_entry_to_pte(entry: SwpEntry) -> int:
    return _PAGE_SWP | (entry.type << SWP_TYPE_SHIFT) | (entry.offset << SWP_OFFSET_SHIFT)


def pte_to_swp_entry(val: int) -> SwpEntry:
    """Decode a swap or migration entry; A and D (stray hardware bits) are ignored."""
    _check_word(val)
    if not pte_is_swap(val):
        raise PteError(f"PTE {val:#x} is not a swap entry")
    type_ = (val >> SWP_TYPE_SHIFT) & ((1 << SWP_TYPE_BITS) - 1)
    offset = (val >> SWP_OFFSET_SHIFT) & ((1 << SWP_OFFSET_BITS) - 1)
    return SwpEntry(type_, offset)


def is_migration_entry(entry: SwpEntry) -> bool:
    return entry.type in (SWP_MIGRATION_READ, SWP_MIGRATION_WRITE)


def make_migration_entry(pfn: int, write: bool) -> SwpEntry:
    return swp_entry(SWP_MIGRATION_WRITE if write else SWP_MIGRATION_READ, pfn)


def is_write_migration_entry(entry: SwpEntry) -> bool:
    return entry.type == SWP_MIGRATION_WRITE


def migration_entry_to_pfn(entry: SwpEntry) -> int:
    if not is_migration_entry(entry):
        raise PteError(f"{entry} is not a migration entry")
    return entry.offset


def pgoff_to_pte(pgoff: int) -> int:
    if not 0 <= pgoff < (1 << PGOFF_BITS):
        raise PteError(f"File offset {pgoff:#x} does not fit in {PGOFF_BITS} bits")
    return _PAGE_FILE | (pgoff << PGOFF_SHIFT)


def pte_to_pgoff(val: int) -> int:
    if not pte_file(val):
        raise PteError(f"PTE {val:#x} is not a file pte")
    return (val >> PGOFF_SHIFT) & ((1 << PGOFF_BITS) - 1)


# ---------------------------------------------------------------------------------------------
# Virtual addresses.

class AccessType(IntEnum):
    """What a CPU or device access does; the walker's permission check depends on it."""
    LOAD = 0
    STORE = 1
    FETCH = 2


class FaultKind(IntEnum):
    """Outcome class of a translation.  The numbering is shared with the RTL."""
    NONE = 0
    PAGE = 1     # page fault: invalid/reserved/permission/A-D (Svade) — software can fix it
    ACCESS = 2   # access fault: a PTE read or A/D update hit a bus error
    MISS = 3     # DeviceMmu only: no entry, the host must fill it


def va_canonical(va: int) -> bool:
    """Sv39: bits 63..39 must equal bit 38."""
    top = va >> (VA_BITS - 1)
    return top == 0 or top == (1 << (64 - VA_BITS + 1)) - 1


def vpn(va: int, level: int) -> int:
    return (va >> LEVEL_SHIFT[level]) & (PTRS_PER_PTE - 1)


def describe(val: int) -> str:
    """A human-readable rendering of a PTE, for reports and violation messages."""
    if pte_present(val):
        bits = "".join(c if val & (1 << i) else "-" for i, c in enumerate("VRWXUGAD"))
        rsv = f" rsv={val >> RESERVED_SHIFT:#x}" if val & RESERVED_MASK else ""
        return f"{bits} ppn={pte_pfn(val):#x}{rsv}"
    if pte_is_swap(val):
        e = pte_to_swp_entry(val)
        if is_migration_entry(e):
            kind = "W" if is_write_migration_entry(e) else "R"
            return f"migration({kind}) pfn={e.offset:#x}"
        return f"swap type={e.type} offset={e.offset:#x}"
    if pte_file(val):
        return f"file pgoff={pte_to_pgoff(val):#x}"
    if pte_none(val):
        return "none" + (" (stray A/D)" if val else "")
    return f"bad {val:#x}"
