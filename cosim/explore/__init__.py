"""TLB design exploration: sweeps of design points over workloads, on the RTL's fast path.

Modules
-------
schema
    The result of one design point (``PointResult``: schema version, git commit, tool
    versions, design, workload, metrics, checks) and the names of its metrics.
spec
    A sweep's specification (TOML or JSON, or CLI flags): design and workload axes, the grid
    of points.
run
    One point on the fast path (build cached per configuration), its metrics and its
    cross-check against the golden model's TLB.
sweep
    Points in parallel (processes, or Ray tasks with ``--ray``), resume, CSV, progress.
plots
    The sweep's figures (matplotlib PNGs).
trace, area, models
    Recorded address streams (Valgrind lackey, ``.npz``), Yosys area and logic depth per
    design, and the independent cross-check models (stack-distance LRU, cachegrind).
"""
