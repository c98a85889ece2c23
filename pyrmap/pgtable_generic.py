"""asm-generic/pgtable.h and x86 (2008) PTE helpers, built on the arch seam.

These are the helpers rmap and the mm call to change a *live* PTE: they combine the arch's
atomics (:meth:`pyrmap.arch.Arch.ptep_get_and_clear`, ``ptep_test_and_clear_young``,
``cmpxchg``) with the TLB flush that makes the change visible to every core.

Contracts, as in the 2008 kernel:

* :func:`ptep_get_and_clear` is an atomic exchange with 0 (x86 ``xchg``): the value returned
  is the last one any hardware walker saw, A and D included.  No TLB flush.  The quirk
  ``kernel.quirks.nonatomic_ptep_get_and_clear`` turns it into a load, a yield point and a
  plain store of 0, so a D bit a walker sets in between is lost (the bug it models).
* :func:`ptep_clear_flush` = :func:`ptep_get_and_clear` + ``flush_tlb_page``: on return no
  CPU TLB holds a translation for the address.
* :func:`ptep_clear_flush_young` clears A and, when A was set and
  ``kernel.config.clear_flush_young_flushes`` (x86 2008), flushes the page, so the next
  access from any core re-walks and sets A again.  With the option off (x86 since
  b13b1d2d8692) A is cleared without a flush.
* :func:`ptep_set_access_flags` widens a live PTE (A, D, W) the way a fault handler does and
  flushes when it changed a dirty entry.

Every function takes the caller's pte lock as given; none takes a lock.
"""

from __future__ import annotations

from .pte import _PAGE_A, _PAGE_D, pte_present

__all__ = [
    "ptep_get_and_clear", "ptep_clear_flush", "ptep_test_and_clear_young",
    "ptep_clear_flush_young", "ptep_set_access_flags", "ptep_set_wrprotect", "pte_same",
]


def _arch(mm):
    return mm.kernel.arch


def pte_same(a: int, b: int) -> bool:
    return a == b


def ptep_get_and_clear(mm, addr: int, ptep: int) -> int:
    """Clear the PTE at ``ptep`` (mapping ``addr`` in ``mm``) and return its last value.

    Caller holds the pte lock.  No TLB flush: cores may still hold the old translation.

    Returns
    -------
    int
        The value the PTE had; with the default atomic exchange, every A/D bit a walker set
        before the clear is in it.
    """
    kernel = mm.kernel
    arch = kernel.arch
    kernel.stats["ptep_get_and_clear"] += 1
    if kernel.quirks.nonatomic_ptep_get_and_clear:
        # The modelled bug: a plain load, a window, a plain store.  A walker's A/D CAS that
        # lands in the window succeeds against the old value and is then overwritten.
        old = arch.pte_load(ptep)
        arch.yield_point("ptep_get_and_clear: between the load and the store")
        arch.set_pte_at(mm, addr, ptep, 0)
        return old
    return arch.ptep_get_and_clear(mm, addr, ptep)


def ptep_clear_flush(vma, addr: int, ptep: int) -> int:
    """Clear the PTE and flush ``addr`` from every core's TLB (asm-generic).

    Caller holds the pte lock.  On return no CPU TLB holds a translation for ``addr`` in
    ``vma.vm_mm`` (secondary MMUs are the notifier's business: see
    :func:`pyrmap.mmu_notifier.ptep_clear_flush_notify`).

    Returns
    -------
    int
        The old PTE value, as returned by :func:`ptep_get_and_clear`.
    """
    pte = ptep_get_and_clear(vma.vm_mm, addr, ptep)
    _arch(vma.vm_mm).flush_tlb_page(vma, addr)
    return pte


def ptep_test_and_clear_young(vma, addr: int, ptep: int) -> int:
    """Atomically clear A; 1 if it was set.  No flush.  Caller holds the pte lock."""
    return int(_arch(vma.vm_mm).ptep_test_and_clear_young(vma, addr, ptep))


def ptep_clear_flush_young(vma, addr: int, ptep: int) -> int:
    """Clear A and, if it was set, flush ``addr`` (x86 2008).

    Caller holds the pte lock.  When ``kernel.config.clear_flush_young_flushes`` is true and
    A was set, on return no core caches the translation, so the next access re-walks and sets
    A again (aging is exact).  When it is false, A is cleared and cores may keep a cached
    entry with A=1, under which they will not set A again (x86 since b13b1d2d8692).

    Returns
    -------
    int
        1 if the PTE was young, else 0.
    """
    kernel = vma.vm_mm.kernel
    kernel.arch.notify("clear_flush_young_start", vma=vma, address=addr)
    young = ptep_test_and_clear_young(vma, addr, ptep)
    flushed = bool(young) and kernel.config.clear_flush_young_flushes
    if flushed:
        kernel.arch.flush_tlb_page(vma, addr)
    kernel.arch.notify("clear_flush_young_end", vma=vma, address=addr, young=young,
                       flushed=flushed)
    return young


def ptep_set_access_flags(vma, addr: int, ptep: int, entry: int, dirty: bool) -> bool:
    """Make the live PTE at ``ptep`` equal ``entry`` (a widening: A, D or W added).

    Caller holds the pte lock; ``entry`` is the PTE value the fault handler read, with the
    bits it wants set.  x86 semantics: the PTE is written, and ``addr`` flushed, only when it
    changed and ``dirty`` is set (hardware sets A on its own).  The write is a compare-and-swap
    that keeps any A/D bit a walker set meanwhile, so no hardware update is lost.

    Returns
    -------
    bool
        Whether the PTE differed from ``entry``.
    """
    mm = vma.vm_mm
    arch = _arch(mm)
    if not pte_present(entry):
        raise ValueError(f"ptep_set_access_flags needs a present PTE, not {entry:#x}")
    old = arch.pte_load(ptep)
    changed = not pte_same(old, entry)
    if changed and dirty:
        while True:
            new = entry | (old & (_PAGE_A | _PAGE_D))
            found = arch.cmpxchg(ptep, old, new)
            if found == old:
                break
            old = found
        arch.flush_tlb_page(vma, addr)
    return changed


def ptep_set_wrprotect(mm, addr: int, ptep: int) -> None:
    """Atomically clear W.  No flush: the caller flushes (fork flushes the whole mm)."""
    _arch(mm).ptep_set_wrprotect(mm, addr, ptep)
