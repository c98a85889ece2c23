"""Reading the design's ports by name (``hdl/PORTS.md``): counters and sampled values."""

from __future__ import annotations

from types import SimpleNamespace

__all__ = ["read_counters", "int_or", "handles", "PortTimeout"]


class PortTimeout(TimeoutError):
    """A port did not answer (``ready``, a response or an ack) within the timeout."""


def int_or(value, default: int) -> int:
    """A signal's value as an integer, ``default`` when some bit is X or Z."""
    try:
        return int(value)
    except ValueError:
        return default


def handles(dut, prefix: str, names) -> SimpleNamespace:
    """The signals ``{prefix}__{name}`` of ``dut`` for every name of ``names``, as attributes
    named ``name``.

    Raises
    ------
    AttributeError
        The design has no such port.
    """
    return SimpleNamespace(**{name: getattr(dut, f"{prefix}__{name}") for name in names})


def read_counters(dut, prefix: str, names) -> dict[str, int]:
    """The counters ``{prefix}__perf__{name}`` of ``dut`` for every name of ``names``
    (:data:`pyrmap.arch.CORE_COUNTERS` with prefix ``cpu{i}``, or
    :data:`pyrmap.arch.DEVICE_COUNTERS` with prefix ``dev``); -1 for one that reads X."""
    return {name: int_or(getattr(dut, f"{prefix}__perf__{name}").value, -1) for name in names}
