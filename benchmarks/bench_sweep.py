"""A 24-run sweep in one process against the same 24 runs as separate `bncli depth-study` processes.

    .venv/bin/python benchmarks/bench_sweep.py

Notebook size (depth 100, width 256, batch 16): 4 inits x 3 norms x 2 seeds. Both sides are
timed in this one run, end to end from the shell's point of view (interpreter start, imports,
the runs, every file written; the sweep also aggregates and draws its plot), and the ratio is
printed. The run CSVs of both sides are checked to be identical, so both did the same work.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = {"init": ["kaiming", "xavier", "normal", "default"], "norm": ["batchnorm", "layernorm", "none"]}
SWEEP = """study: depth-study
name: bench
base: {depth: 100, width: 256, batch_size: 16, activation: relu}
grid:
  init: [kaiming, xavier, normal, default]
  norm: [batchnorm, layernorm, none]
seeds: [0, 1]
"""
BNCLI = [sys.executable, "-m", "bncli"]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bench.yaml").write_text(SWEEP)
        one = timed([*BNCLI, "sweep", str(tmp / "bench.yaml"), "--out", str(tmp / "a"), "--no-progress"])
        runs = sorted((tmp / "a" / "sweeps" / "bench" / "runs").iterdir())
        assert len(runs) == 24, runs
        many = 0.0
        for run in runs:
            v = dict(kv.split("=") for kv in run.name.split(","))
            many += timed(
                [
                    *BNCLI,
                    "depth-study",
                    "--init",
                    v["init"],
                    "--norm",
                    v["norm"],
                    "--seed",
                    v["seed"],
                    "--depth",
                    "100",
                    "--width",
                    "256",
                    "--batch-size",
                    "16",
                    "--activation",
                    "relu",
                    "--out",
                    str(tmp / "b"),
                    "--name",
                    run.name,
                ]
            )
            assert (run / "layers.csv").read_bytes() == (
                tmp / "b" / "depth-study" / run.name / "layers.csv"
            ).read_bytes(), run.name
    print("24 runs, depth 100, width 256, batch 16 (4 inits x 3 norms x 2 seeds)")
    print(f"  one bncli sweep process:          {one:7.2f} s  ({one / 24 * 1000:6.0f} ms per run)")
    print(f"  24 bncli depth-study processes:   {many:7.2f} s  ({many / 24 * 1000:6.0f} ms per run)")
    print(f"  speed-up: {many / one:.1f}x")


if __name__ == "__main__":
    main()
