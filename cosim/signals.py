"""Reading a signal's value as an integer, the way the drivers poll status and pointers.

cocotb's ``int(handle.value)`` builds a :class:`cocotb.types.LogicArray` on every read (a few
microseconds); a driver that polls pointers and status flags thousands of times a run pays that
on each.  :func:`peek` reads the simulator's bit string and converts it directly.

Public API: :func:`peek`.
"""

from __future__ import annotations

__all__ = ["peek"]


def peek(handle) -> int:
    """The value of the signal ``handle`` (a cocotb handle of a logic scalar or vector), as an
    unsigned integer, read now.

    Raises
    ------
    ValueError
        A bit of the signal is X, Z or another non-binary value; the message names the
        signal and shows its bits.
    """
    bits = handle._handle.get_signal_val_binstr()
    try:
        return int(bits, 2)
    except ValueError:
        raise ValueError(f"{handle._path} holds {bits!r}, not a binary value") from None
