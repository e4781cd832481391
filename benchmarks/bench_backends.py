"""The same 48-run sweep three ways: sequential, a local pool (--workers 2) and Ray.

    .venv/bin/python benchmarks/bench_backends.py [--sizes notebook,wide]

48 runs = 4 inits x 3 norms x 4 seeds. Each backend is timed end to end as a user runs it
(`bncli sweep ...` in a fresh process: interpreter, imports, Ray start-up, every file written),
all in this one run, and the ratio to sequential is printed. The run CSVs of every backend are
checked to be byte-identical, so all did the same work. Needs the ray extra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # name -> base settings; notebook is the notebook's size, wide makes each run cost ~1 s
    "notebook": "{depth: 100, width: 256, batch_size: 16}",
    "wide": "{depth: 100, width: 1024, batch_size: 128}",
}
SWEEP = """study: depth-study
name: bench
base: %s
grid:
  init: [kaiming, xavier, normal, default]
  norm: [batchnorm, layernorm, none]
seeds: [0, 1, 2, 3]
"""
BACKENDS = {
    "sequential": [],
    "pool (--workers 2)": ["--workers", "2"],
    "ray (local instance)": ["--backend", "ray", "--cpus-per-run", "1"],
}


def sweep(tmp: Path, size: str, label: str, extra: list[str]) -> tuple[float, dict[str, bytes]]:
    spec = tmp / f"{size}.yaml"
    spec.write_text(SWEEP % SIZES[size])
    out = tmp / f"{size}-{len(extra)}"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bncli", "sweep", str(spec), "--out", str(out), "--no-progress", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    took = time.perf_counter() - t0
    runs = out / "sweeps" / "bench" / "runs"
    return took, {p.parent.name: p.read_bytes() for p in runs.glob("*/layers.csv")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="notebook,wide")
    args = ap.parse_args()
    lines = [f"48-run sweep, {os.cpu_count()} CPUs, times end to end (one process per sweep)", ""]
    lines += ["| size | backend | time (s) | ms per run | speed-up vs sequential |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            base, ref = None, None
            for label, extra in BACKENDS.items():
                took, files = sweep(Path(tmp), size, label, extra)
                assert len(files) == 48, (label, len(files))
                if ref is None:
                    base, ref = took, files
                assert files == ref, f"{label} wrote different layers.csv than sequential"
                lines.append(
                    f"| {size} {SIZES[size]} | {label} | {took:.1f} | {took / 48 * 1000:.0f} | {base / took:.2f}x |"
                )
                print(lines[-1], flush=True)
    import datetime
    import platform

    import torch

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# bncli sweep backends",
        "",
        f"Written by `benchmarks/bench_backends.py` on {stamp}: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}.",
        "",
    ]
    text = "\n".join(head + lines) + "\n"
    out = Path(__file__).with_name("results_backends.md")
    out.write_text(text)
    print(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
