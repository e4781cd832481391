"""A sweep's summary.csv and aggregate.csv: written run by run in bounded memory, and a statistic
not computed (an empty cell) never written like one that overflowed (nan).

    .venv/bin/python -m pytest tests/test_summary.py -q
"""

import csv
import json
import shutil
import tracemalloc

import numpy as np
import pandas as pd
from helpers import sweep_file

from bncli import sweeps

LAYERS = 200


def synthetic(tmp_path, configs, seeds, layers=LAYERS):
    """A planned sweep whose runs are copies of one real run's files (its config.yaml each its
    own): summary and aggregate read only files, so the runs need not be computed again."""
    src = tmp_path / "src"
    plan = sweeps.plan(
        None,
        tmp_path / f"out{configs}x{seeds}",
        study="depth-study",
        base={"depth": layers, "width": 4, "batch_size": 2},
        grid={"init_std": [1.0 + i / 8 for i in range(configs)]},
        seeds=list(range(seeds)),
    )
    if not src.exists():
        one = sweeps.plan(
            None, tmp_path / "one", study="depth-study", base={"depth": layers, "width": 4, "batch_size": 2}
        )
        sweeps.run(one)
        shutil.copytree(one.dir / "runs" / one.points[0].name, src)
    for p in plan.points:
        d = plan.dir / "runs" / p.name
        shutil.copytree(src, d)
        (d / "config.yaml").write_text(p.cfg.to_yaml("depth-study"))
    return plan


def peak_of(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_summary_of_many_runs_holds_memory_bounded(tmp_path):
    """Eight times the runs, as configs or as seeds, costs about the same peak memory (it grew
    with the runs: 300 runs of 20000 layers peaked at 11.4 GB); the files hold every run."""
    small, configs, seeds = synthetic(tmp_path, 2, 2), synthetic(tmp_path, 16, 2), synthetic(tmp_path, 2, 16)
    base = peak_of(lambda: sweeps.aggregate(small))
    for big in (configs, seeds):
        peak = peak_of(lambda big=big: sweeps.aggregate(big))
        assert peak < 2 * base, (peak, base)  # a run's table at a time, not all of them
        with open(big.dir / "summary.csv") as f:
            assert sum(1 for _ in f) == 1 + 32 * LAYERS
        agg = pd.read_csv(big.dir / "aggregate.csv")
        assert len(agg) == (16 if big is configs else 2) * LAYERS
    agg = pd.read_csv(seeds.dir / "aggregate.csv")  # 16 copies of one run: its values, sd 0
    run = pd.read_csv(seeds.dir / "runs" / seeds.points[0].name / "layers.csv")
    first = agg[agg["init_std"] == 1.0]
    np.testing.assert_array_equal(first["std_mean"].to_numpy(), run["std"].to_numpy())
    assert (first["std_sd"] == 0).all() and (first["seeds"] == 16).all()


def test_not_computed_is_empty_and_overflow_is_nan_in_summary_and_aggregate(cli, tmp_path):
    """As layers.csv writes them: erank off (not computed) is an empty cell in summary.csv and
    aggregate.csv, a diverged layer's std (computed, overflowed) is nan; a failed run's row has
    empty cells but its settings and status; an sd of one seed is not computed (empty)."""
    path = sweep_file(
        tmp_path,
        base={"depth": 5, "width": 8, "batch_size": 4, "init_std": 1e10},  # normal + none overflows
        grid={"init": ["kaiming", "normal"], "norm": ["batchnorm", "none"], "erank": [False, True]},
        seeds=(0, 1),
    )
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    d = tmp_path / "out" / "sweeps" / "s"
    rows = list(csv.DictReader(open(d / "summary.csv")))
    for row in rows:
        run = d / "runs" / row["run"] / "layers.csv"
        mine = list(csv.DictReader(open(run)))[int(row["layer"])]
        assert {k: row[k] for k in mine} == mine  # every cell as the run wrote it
        assert (row["erank"] == "") == (row["cfg.erank"] == "False")
    diverged = [row for row in rows if row["init"] == "normal" and row["norm"] == "none"]
    assert {row["std"] for row in diverged if row["layer"] == "3"} == {"nan"}
    agg = list(csv.DictReader(open(d / "aggregate.csv")))
    for row in agg:
        off = row["cfg.erank"] == "False"
        assert (row["erank_mean"] == "", row["erank_sd"] == "") == (off, off)
        assert row["grad_std_mean"] == row["grad_std_sd"] == ""  # grads off everywhere
    blown = [row for row in agg if row["init"] == "normal" and row["norm"] == "none" and row["layer"] == "3"]
    assert blown and {row["std_mean"] for row in blown} == {"nan"}  # computed in both seeds, neither finite
    single = synthetic(tmp_path, 1, 1, layers=3)
    sweeps.aggregate(single)
    one = pd.read_csv(single.dir / "aggregate.csv", keep_default_na=False)
    assert (one["std_sd"] == "").all() and (one["std_mean"] != "").all()


def test_a_failed_runs_row_is_empty_but_its_settings_and_status(tmp_path):
    plan = synthetic(tmp_path, 1, 2, layers=3)
    failed = plan.dir / "runs" / plan.points[1].name
    (failed / "layers.csv").unlink()
    meta = json.loads((failed / "meta.json").read_text())
    (failed / "meta.json").write_text(json.dumps({**meta, "status": "failed", "error": "boom"}))
    sweeps.aggregate(plan)
    rows = list(csv.DictReader(open(plan.dir / "summary.csv")))
    assert len(rows) == 3 + 1
    last = rows[-1]
    assert last["run"] == plan.points[1].name and last["status"] == "failed" and last["depth"] == "3"
    assert last["layer"] == last["std"] == last["erank"] == ""
    assert pd.read_csv(plan.dir / "aggregate.csv")["seeds"].tolist() == [1, 1, 1]


def test_a_summary_too_large_to_read_is_refused_up_front_in_one_line(cli, tmp_path, monkeypatch):
    """show reads summary.csv whole: one that cannot fit (it died with MemoryError under an 8 GB
    cap) is one line naming it and what to read instead; the cap counts an rlimit and a cgroup."""
    import resource

    import torch

    from bncli import runtime

    plan = synthetic(tmp_path, 1, 2, layers=3)
    sweeps.aggregate(plan)
    (plan.dir / "sweep.yaml").write_text(plan.text)
    size = (plan.dir / "summary.csv").stat().st_size
    monkeypatch.setattr(resource, "getrlimit", lambda which: (3 * size, resource.RLIM_INFINITY))
    assert runtime.capacity(torch.device("cpu")) == 3 * size  # under the machine's RAM: the cap
    r = cli("show", plan.dir)
    assert r.exit_code == 2 and len(r.output.splitlines()) == 1, r.output
    assert r.output.startswith(f"Error: too large: reading {plan.dir / 'summary.csv'}") and "aggregate.csv" in r.output
    monkeypatch.undo()
    assert cli("show", plan.dir).exit_code == 0


def test_a_run_csv_that_does_not_read_is_damaged_naming_the_run(tmp_path):
    import pytest

    from bncli.errors import Damaged

    plan = synthetic(tmp_path, 1, 2, layers=3)
    csv_path = plan.dir / "runs" / plan.points[1].name / "layers.csv"
    good = csv_path.read_bytes()
    for bad in (good + b'0,"' + b"x" * 200_000 + b'"\n', b"\xff\xfe" + good):  # a field over csv's limit; not UTF-8
        csv_path.write_bytes(bad)
        with pytest.raises(Damaged, match=f"^{csv_path.parent}: these results are damaged .*layers.csv is not a CSV"):
            sweeps.aggregate(plan)
        assert not list(plan.dir.glob(".*.tmp"))  # nothing half-written left


def test_a_bounded_read_costs_the_file_not_the_bound(tmp_path):
    """read_bytes' bound (1 GiB for a CSV) is a limit, not an allocation: read(n) allocates n bytes
    at once, so a 2 kB file had cost 1 GiB per read (every run's CSV in a summary, every show)."""
    import pytest

    from bncli.config import TooLarge, read_bytes

    f = tmp_path / "small.csv"
    f.write_bytes(b"x" * 2000)
    peak = peak_of(lambda: read_bytes(f, 2**30))
    assert peak < 100_000, peak
    assert read_bytes(f, 2000) == b"x" * 2000
    with pytest.raises(TooLarge):
        read_bytes(f, 1999)
