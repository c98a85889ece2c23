"""The sweep's figures (matplotlib, PNG in the results folder).

* ``miss_rate.png``: miss rate against TLB entries, one line per ways/replacement, one panel
  per workload;
* ``area_pareto.png``: Yosys area (estimated transistors) against miss rate, the Pareto front
  marked (only points whose ``area`` was measured);
* ``walk_latency_cdf.png``: the CDF of TLB-miss latency per design (from each point's
  histogram);
* ``shootdown_cost.png``: mean cycles per shootdown against cores, per workload with a kernel.

Each function returns the path it wrote, or None (with the reason in ``skipped``) when the
results have nothing to draw.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["make_plots", "pareto_front"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def _ways_label(d: dict) -> str:
    if d["ways"] == d["entries"]:
        return "full"
    return "direct" if d["ways"] == 1 else f"{d['ways']}-way"


def pareto_front(xs, ys) -> list[int]:
    """Indices of the points no other point beats on both ``x`` and ``y`` (lower is better),
    sorted by ``x``."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))
    front, best = [], float("inf")
    for i in order:
        if ys[i] < best:
            front.append(i)
            best = ys[i]
    return front


def miss_rate_plot(rows, out: Path):
    rows = _ok(rows)
    if not rows:
        return None
    plt = _plt()
    workloads = sorted({r["workload"]["workload"] for r in rows})
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        lines = defaultdict(list)
        for r in rows:
            if r["workload"]["workload"] != w:
                continue
            d = r["design"]
            lines[(_ways_label(d), d["replacement"])].append(
                (d["entries"], r["metrics"]["miss_rate"]))
        for (ways, repl), pts in sorted(lines.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{ways} {repl}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("TLB entries")
        ax.set_ylabel("miss rate (misses / accesses)")
        ax.set_title(w)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, out / "miss_rate.png")


def area_plot(rows, out: Path):
    rows = [r for r in _ok(rows) if r.get("area") and r["area"].get("transistors")]
    if not rows:
        return None
    plt = _plt()
    xs = [float(r["area"]["transistors"]) for r in rows]
    ys = [r["metrics"]["miss_rate"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(xs, ys, s=18, alpha=0.6, label="design points")
    front = pareto_front(xs, ys)
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "r-o", label="Pareto front")
    for i in front:
        d = rows[i]["design"]
        ax.annotate(f"{d['entries']}e {_ways_label(d)} {d['replacement']}", (xs[i], ys[i]),
                    fontsize=6)
    ax.set_xlabel("area (estimated transistors, Yosys stat -tech cmos)")
    ax.set_ylabel("miss rate")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(plt, fig, out / "area_pareto.png")


def latency_cdf_plot(rows, out: Path, limit: int = 12):
    rows = [r for r in _ok(rows) if sum(r["metrics"].get("walk_latency_hist", [[], [0]])[1])]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows[:limit]:
        edges, counts = r["metrics"]["walk_latency_hist"]
        counts = np.asarray(counts, dtype=float)
        cdf = np.cumsum(counts) / counts.sum()
        hi = [min(e, 2048) for e in edges[1:]]
        d = r["design"]
        ax.step(hi, cdf, where="post",
                label=f"{d['entries']}e {_ways_label(d)} lat{d['latency']} "
                      f"{r['workload']['workload']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("TLB-miss latency, request to data (cycles, bucket upper edge)")
    ax.set_ylabel("fraction of misses")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    return _save(plt, fig, out / "walk_latency_cdf.png")


def shootdown_plot(rows, out: Path):
    rows = [r for r in _ok(rows) if r["metrics"]["shootdowns"]]
    if not rows:
        return None
    plt = _plt()
    lines = defaultdict(lambda: defaultdict(list))
    for r in rows:
        m = r["metrics"]
        lines[r["workload"]["workload"]][r["design"]["cores"]].append(
            m["inval_cycles"] / m["shootdowns"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for w, by_cores in sorted(lines.items()):
        cores = sorted(by_cores)
        ax.plot(cores, [float(np.mean(by_cores[c])) for c in cores], marker="o", label=w)
    ax.set_xlabel("cores")
    ax.set_ylabel("cycles per shootdown (send to last ack)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(plt, fig, out / "shootdown_cost.png")


def device_tlb_plot(rows, out: Path):
    """Device-TLB hit rate against its entries (points with device traffic)."""
    rows = [r for r in _ok(rows) if r["metrics"].get("dev_accesses")]
    if not rows:
        return None
    plt = _plt()
    lines = defaultdict(lambda: defaultdict(list))
    for r in rows:
        lines[r["workload"]["workload"]][r["design"]["dev_entries"]].append(
            r["metrics"]["dev_hit_rate"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for w, by_entries in sorted(lines.items()):
        xs = sorted(by_entries)
        ax.plot(xs, [float(np.mean(by_entries[x])) for x in xs], marker="o", label=w)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("device TLB entries")
    ax.set_ylabel("device TLB hit rate")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(plt, fig, out / "device_tlb.png")


def make_plots(rows: list[dict], out: Path) -> tuple[list[Path], dict[str, str]]:
    """Every figure that ``rows`` (point results) can give; returns (written, skipped)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for name, fn, why in (
            ("miss_rate", miss_rate_plot, "no point succeeded"),
            ("area_pareto", area_plot, "no point has a measured area"),
            ("walk_latency_cdf", latency_cdf_plot, "no point had a TLB miss"),
            ("shootdown_cost", shootdown_plot, "no point ran a kernel that shoots down"),
            ("device_tlb", device_tlb_plot, "no point drove the device TLB")):
        path = fn(rows, out)
        if path is None:
            skipped[name] = why
        else:
            written.append(path)
    return written, skipped
