"""``python -m cosim.litmus FILE... --runs N --sim {icarus,verilator}``."""
import sys

from .runner import main

sys.exit(main())
