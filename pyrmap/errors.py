"""The engine's exceptions for bad input and for user accesses the mm refuses.

Syscalls (:mod:`pyrmap.mmap`, :mod:`pyrmap.fremap`) report bad input the way the kernel does,
by errno, but as exceptions: each errno is a class named after it (``EINVAL``, ``ENOMEM``,
...), a subclass of :class:`MmError` carrying ``errno`` and a message that says what was wrong
with which value.  A syscall that raises has changed nothing (the VMA list, page tables and
counters are as they were), unless its docstring says otherwise.

The fault handler (:func:`pyrmap.memory.do_page_fault`) raises :class:`SegmentationFault` for
an access the mm does not allow (SIGSEGV) and :class:`BusErrorSignal` for an access beyond the
end of a mapped file (SIGBUS).  Engine-internal contract violations are not here: they raise
``AssertionError``/``KernelBug`` where they are detected.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "MmError", "EINVAL", "ENOMEM", "EFAULT", "EACCES", "EPERM", "EAGAIN", "EBADF",
    "SegmentationFault", "BusErrorSignal", "OutOfMemoryError",
]


class MmError(Exception):
    """A syscall refused its arguments.  ``errno`` is the kernel's error number."""

    errno: int = 0

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def name(self) -> str:
        return type(self).__name__


def _errno_class(name: str, doc: str, *bases) -> type:
    return type(name, (MmError, *bases), {"errno": getattr(_errno, name), "__doc__": doc,
                                          "__module__": __name__})


EINVAL = _errno_class("EINVAL", "Invalid argument (unaligned address, zero length, bad "
                      "flags).", ValueError)
ENOMEM = _errno_class("ENOMEM", "Address range not (fully) mapped, no room for a mapping, "
                      "or out of memory.")
EFAULT = _errno_class("EFAULT", "Bad address: the range is not inside one mapping.")
EACCES = _errno_class("EACCES", "The mapping does not allow the requested protection "
                      "(its VM_MAY* flags forbid it).", PermissionError)
EPERM = _errno_class("EPERM", "Operation not permitted.", PermissionError)
EAGAIN = _errno_class("EAGAIN", "Resource temporarily unavailable (locked pages).")
EBADF = _errno_class("EBADF", "The file was not opened for the requested access.")


class SegmentationFault(Exception):
    """SIGSEGV: a user access to an address no VMA covers, or one its VMA forbids.

    Members
    -------
    address : int
        The faulting virtual address.
    access : pyrmap.pte.AccessType
    reason : str
        ``"no vma"`` or ``"access"`` (SEGV_MAPERR / SEGV_ACCERR).
    """

    def __init__(self, message: str, address: int, access, reason: str):
        super().__init__(message)
        self.address = address
        self.access = access
        self.reason = reason


class BusErrorSignal(Exception):
    """SIGBUS: an access to a file mapping beyond the end of the file, or to a page that
    could not be read.  ``address`` and ``access`` as in :class:`SegmentationFault`."""

    def __init__(self, message: str, address: int, access):
        super().__init__(message)
        self.address = address
        self.access = access


class OutOfMemoryError(Exception):
    """VM_FAULT_OOM: the fault handler found no frame even after reclaim."""
