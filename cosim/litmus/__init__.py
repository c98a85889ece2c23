"""Litmus tests at cycle level: the text format (:mod:`.parser`, :mod:`.model`), the cocotb
bench that executes them on the RTL (:mod:`.bench`), and the runner (:mod:`.runner`)."""

from .model import LitmusTest, Verdict
from .parser import LitmusSyntaxError, parse, parse_file

__all__ = ["LitmusTest", "Verdict", "LitmusSyntaxError", "parse", "parse_file"]
