"""`bncli runs` over 10,000 saved runs: time and peak memory, against an older checkout side by side.

    .venv/bin/python benchmarks/bench_runs.py                      # this checkout only
    git archive main | tar -x -C /tmp/old && .venv/bin/python benchmarks/bench_runs.py --old /tmp/old

One real depth-study run (depth 100, width 16: a 100-row layers.csv) is made, then copied into
--runs directories under one results folder, each with its own start time and one of four inits,
so the listing has something to sort and show. Each side lists the folder in a fresh process
(interpreter start and imports included), as `bncli runs DIR` and `bncli runs DIR --format csv`,
into a pipe; the sides take turns, --repeats times, and the median is reported with the peak
resident memory of the process (ru_maxrss). Both sides' csv listings are checked to hold the
same rows, so both did the same work. Writes benchmarks/results_runs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
INITS = ["kaiming", "xavier", "normal", "default"]
DRIVER = """
import resource, sys
sys.argv = ["bncli", *sys.argv[2:]]
from bncli.cli import main
try:
    main()
finally:
    with open({peak!r}, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def make_results(root: Path, n: int) -> Path:
    """`n` copies of one real run under root/results/depth-study/."""
    out = root / "results"
    subprocess.run(
        [sys.executable, "-m", "bncli", "depth-study", "--depth", "100", "--width", "16", "--device", "cpu"]
        + ["--out", str(root / "seed"), "--name", "seed", "-q"],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=HERE,
    )
    seed = root / "seed" / "depth-study" / "seed"
    config, meta, csv = ((seed / f).read_text() for f in ("config.yaml", "meta.json", "layers.csv"))
    base = json.loads(meta)
    for i in range(n):
        d = out / "depth-study" / f"run-{i:05d}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(config.replace("init: kaiming", f"init: {INITS[i % 4]}"))
        started = f"2026-01-{1 + i // 1440 % 28:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00+00:00"
        (d / "meta.json").write_text(json.dumps({**base, "started_at": started}))
        (d / "layers.csv").write_text(csv)
    return out


def measure(tree: Path, args: list[str], peak: Path) -> tuple[float, float, str]:
    """(seconds, peak MiB, stdout) of `bncli ARGS` run from checkout `tree` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", DRIVER.format(peak=str(peak)), "--", *args],
        env=env,
        cwd=peak.parent,  # python -c puts the working directory first on sys.path: not a checkout
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    assert done.stderr.strip() == "", done.stderr[-2000:]
    return wall, int(peak.read_text()) / 1024, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--old", type=Path, help="an older checkout (its root, holding bncli/) to list the same folder")
    ap.add_argument("--old-name", default="old", help="what --old is, for the results (a commit)")
    ap.add_argument("--out", type=Path, default=HERE / "benchmarks" / "results_runs.md")
    opts = ap.parse_args()
    sides = {"this checkout": HERE, **({"old": opts.old.resolve()} if opts.old else {})}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = make_results(Path(tmp), opts.runs)
        peak = Path(tmp) / "peak"
        for fmt in (["--format", "csv"], []):
            got: dict[str, list[tuple[float, float]]] = {s: [] for s in sides}
            outputs: dict[str, str] = {}
            for _ in range(opts.repeats):
                for side, tree in sides.items():  # interleaved: the sides share whatever load the machine has
                    wall, mib, text = measure(tree, ["runs", str(results), *fmt], peak)
                    got[side].append((wall, mib))
                    outputs[side] = text
            if fmt and opts.old:
                assert outputs["old"].splitlines() == outputs["this checkout"].splitlines(), "the listings differ"
            for side in sides:
                wall = statistics.median(w for w, _ in got[side])
                mib = max(m for _, m in got[side])
                rows.append((" ".join(["runs", *fmt]) or "runs", side, wall, wall / opts.runs * 1e3, mib))
    base = {fmt: wall for fmt, side, wall, _, _ in rows if side == "old"}
    lines = [
        "# bncli runs over many saved runs",
        "",
        f"Written by `benchmarks/bench_runs.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other work while it ran), "
        f"Python {platform.python_version()}.",
        "",
        f"{opts.runs} runs (depth 100: a 100-row layers.csv each), one fresh process per listing (start-up and "
        f"imports included), median of {opts.repeats}, the sides interleaved; peak = the process's max RSS."
        + (f" old: {opts.old_name}." if opts.old else ""),
        "",
        "| command | code | time (s) | ms per run | peak MiB | time vs old |",
        "|---|---|---|---|---|---|",
    ]
    for fmt, side, wall, per, mib in rows:
        ratio = f"{wall / base[fmt]:.2f}x" if fmt in base else "-"
        lines.append(f"| `{fmt}` | {side} | {wall:.1f} | {per:.2f} | {mib:.0f} | {ratio} |")
    lines += [
        "",
        "The old code read every run's layers.csv in full and imported torch; this one reads meta.json and",
        "config.yaml (libyaml) and stats the CSV. What is left of the table's time is rich laying out the rows.",
    ]
    opts.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(Path(tmp), ignore_errors=True)


if __name__ == "__main__":
    main()
