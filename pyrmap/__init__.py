"""pyrmap: Linux mm/rmap.c (2008) and the mmu-notifier core, with the small mm around them.

Pure Python + numpy; imports no simulator.  The engine touches PTEs and TLBs only through
:mod:`pyrmap.arch`.
"""

__version__ = "0.1.0"
