"""A large sweep's summary.csv and aggregate.csv, streamed run by run, against one table in memory.

    .venv/bin/python benchmarks/bench_summary.py                       # 60 runs x 5000 layers
    .venv/bin/python benchmarks/bench_summary.py --runs 300 --layers 20000   # the issue's (11.4 GB before)

The sweep is synthetic: one real depth-study run of --layers layers, copied for every run of a
grid of init_std values x 2 seeds (each copy with its own config.yaml), since summarising reads
files only. Each side runs in a fresh process, interleaved, --repeats times: `streamed` is
bncli's sweeps.aggregate; `in-memory` is how it was done before (every run's table read with
pandas, concatenated, one groupby), written beside it. Reported: wall time and peak resident
memory over the process's own after imports (VmHWM), and their ratios; the two aggregate.csv
files are checked to hold the same numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM: not carried over from a parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def make_plan(root: Path, runs: int, layers: int):
    from bncli import sweeps

    configs = max(1, runs // 2)
    return sweeps.plan(
        None,
        root,
        study="depth-study",
        base={"depth": layers, "width": 8, "batch_size": 4, "device": "cpu"},
        grid={"init_std": [1.0 + i / 1000 for i in range(configs)]},
        seeds=[0, 1],
        name="bench",
    )


def build(root: Path, runs: int, layers: int) -> None:
    from bncli import sweeps

    one = sweeps.plan(None, root / "one", study="depth-study", base={"depth": layers, "width": 8, "batch_size": 4})
    sweeps.run(one)
    src = one.dir / "runs" / one.points[0].name
    plan = make_plan(root, runs, layers)
    for p in plan.points:
        d = plan.dir / "runs" / p.name
        shutil.copytree(src, d)
        (d / "config.yaml").write_text(p.cfg.to_yaml("depth-study"))


def in_memory(plan) -> None:
    """The summary as bncli made it before: every run's table in one DataFrame, one groupby."""
    import numpy as np
    import pandas as pd

    from bncli import results, studies, sweeps

    mod = studies.get(plan.study)
    frames = []
    for p in plan.points:
        table = results.read_table(plan.dir / "runs" / p.name / mod.CSV)
        config = {results.setting_column(k, table.columns): v for k, v in sweeps._config_columns(p).items()}
        head = pd.DataFrame({k: [v] * len(table) for k, v in {"run": p.name, **config, "status": "ok"}.items()})
        frames.append(pd.concat([head, table], axis=1))
    table = pd.concat(frames, ignore_index=True)
    results.write_csv(plan.dir / "summary-in-memory.csv", table)
    settings = results.setting_columns(plan.study, table.columns)
    config = [c for f, c in settings.items() if f != "seed"]
    skip = {"run", "status", *mod.ID_COLUMNS, *mod.TEXT_COLUMNS, *settings.values()}
    stats = [c for c in table.columns if c not in skip]
    values = table[stats].astype(float).replace([np.inf, -np.inf], np.nan)
    grouped = pd.concat([table[config + mod.ID_COLUMNS], values], axis=1).groupby(
        config + mod.ID_COLUMNS, sort=False, dropna=False
    )
    agg = grouped[stats].agg(["mean", "std"])
    agg.columns = [f"{s}_{'sd' if f == 'std' else f}" for s, f in agg.columns]
    agg.insert(0, "seeds", grouped.size())
    results.write_csv(plan.dir / "aggregate-in-memory.csv", agg.reset_index())


def child(root: Path, runs: int, layers: int, side: str) -> None:
    from bncli import sweeps

    plan = make_plan(root, runs, layers)
    base = peak_rss()
    t0 = time.perf_counter()
    sweeps.aggregate(plan) if side == "streamed" else in_memory(plan)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rss": peak_rss() - base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--layers", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(Path(args.root), args.runs, args.layers, args.child)
    import numpy as np
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, args.runs, args.layers)
        got: dict[str, list[dict]] = {"streamed": [], "in-memory": []}
        for _ in range(args.repeats):
            for side in got:  # interleaved: the machine's load falls on both alike
                cmd = [sys.executable, __file__, "--child", side, "--root", tmp]
                cmd += ["--runs", str(args.runs), "--layers", str(args.layers)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                got[side].append(json.loads(out.splitlines()[-1]))
        d = make_plan(root, args.runs, args.layers).dir
        a, b = pd.read_csv(d / "aggregate.csv"), pd.read_csv(d / "aggregate-in-memory.csv")
        num = [c for c in a.columns if c.endswith(("_mean", "_sd"))]
        same = np.allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-12, equal_nan=True)
        size = (d / "summary.csv").stat().st_size
    print(f"{args.runs} runs x {args.layers} layers (summary.csv {size / 2**20:.0f} MiB), best of {args.repeats}:")
    best = {s: (min(r["seconds"] for r in v), min(r["rss"] for r in v)) for s, v in got.items()}
    for side, (sec, rss) in best.items():
        print(f"  {side:10s} {sec:8.2f} s  {rss / 2**20:9.1f} MiB peak over its imports")
    (ts, ms), (ti, mi) = best["streamed"], best["in-memory"]
    print(f"  streamed / in-memory: time x{ts / ti:.2f}, peak memory x{ms / max(mi, 1):.3f}")
    print(f"  aggregate.csv numbers the same (rtol 1e-12): {same}")


if __name__ == "__main__":
    main()
