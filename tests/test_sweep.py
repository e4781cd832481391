"""bncli sweep: grid expansion, checks before running, files equal to single runs, resume, failures."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import file_bytes, sweep_file

from bncli import sweeps

BASE = {"depth": 5, "width": 16, "batch_size": 4, "init_std": 1e10}  # normal + none overflows at layer 3
GRID = {"init": ["kaiming", "normal"], "norm": ["batchnorm", "none"]}


def write_sweep(tmp_path, name="s", grid=GRID, seeds=(0, 1), base=BASE, study="depth-study", **extra):
    return sweep_file(tmp_path, name, study, base, grid, seeds, **extra)


def sweep_cli(cli, *args):
    return cli("sweep", *args, "--no-progress")


def test_expand_is_the_cartesian_product_times_seeds():
    points = sweeps.expand({"init": ["a", "b"], "norm": ["x", "y", "z"]}, [0, 1])
    assert len(points) == 12
    assert points[:3] == [
        {"init": "a", "norm": "x", "seed": 0},
        {"init": "a", "norm": "x", "seed": 1},
        {"init": "a", "norm": "y", "seed": 0},
    ]
    assert points[-1] == {"init": "b", "norm": "z", "seed": 1}
    assert len({tuple(p.values()) for p in points}) == 12
    assert sweeps.expand({}, [3]) == [{"seed": 3}]


def test_plan_validates_every_point_with_the_study_model(tmp_path):
    plan = sweeps.plan(
        write_sweep(tmp_path, grid={"momentum": [0.1, None]}, base={"iterations": 3}, study="running-stats", seeds=[0]),
        tmp_path / "out",
    )
    assert [p.name for p in plan.points] == ["momentum=0.1,seed=0", "momentum=none,seed=0"]
    assert plan.points[1].cfg.momentum is None and plan.points[0].cfg.iterations == 3
    assert plan.dir == tmp_path / "out" / "sweeps" / "s" and plan.keys == ["momentum"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "grid, base, extra, words",
    [
        ({"init": ["kaiming", "kaimin"]}, BASE, {}, ["init", "kaimin", "xavier"]),
        ({"norm": ["batchnorm"], "batch_size": [4, 1]}, {"depth": 3}, {}, ["batch_size", "at least 2"]),
        ({"nrom": ["none"]}, BASE, {}, ["grid.nrom", "not a field of depth-study; did you mean 'norm'?"]),
        ({"seed": [1]}, BASE, {}, ["grid.seed", "seeds"]),
        ({"init": []}, BASE, {}, ["grid.init", "at least 1"]),
        (GRID, BASE, {"gird": 1}, ["gird", "not a key of a sweep file; did you mean 'grid'?"]),
        (GRID, BASE, {"study": "depth"}, ["study", "depth-study"]),
    ],
)
def test_a_bad_sweep_file_fails_before_anything_runs(cli, tmp_path, grid, base, extra, words):
    out = tmp_path / "out"
    r = sweep_cli(cli, write_sweep(tmp_path, grid=grid, base=base, **extra), "--out", out)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, (w, r.output)
    assert not out.exists()


def test_sweep_runs_equal_single_runs_and_summaries_are_right(cli, tmp_path):
    out = tmp_path / "out"
    r = sweep_cli(cli, write_sweep(tmp_path), "--out", out)
    assert r.exit_code == 0, r.output
    d = out / "sweeps" / "s"
    assert (d / "sweep.yaml").read_text() == (tmp_path / "s.yaml").read_text()
    names = sorted(p.name for p in (d / "runs").iterdir())
    assert len(names) == 8 and "init=normal,norm=none,seed=1" in names

    # each run is byte for byte what `bncli depth-study` writes for the same settings
    single = tmp_path / "single"
    for name in names:
        values = dict(kv.split("=") for kv in name.split(","))
        r = cli(
            "depth-study",
            "--depth",
            5,
            "--width",
            16,
            "--batch-size",
            4,
            "--init-std",
            "1e10",
            "--init",
            values["init"],
            "--norm",
            values["norm"],
            "--seed",
            values["seed"],
            "--name",
            name,
            out_dir=single,
        )
        assert r.exit_code == 0, r.output
        for f in ("layers.csv", "config.yaml"):
            assert (d / "runs" / name / f).read_bytes() == (single / "depth-study" / name / f).read_bytes()
        meta = json.loads((d / "runs" / name / "meta.json").read_text())
        assert meta["status"] == ("diverged" if values["init"] == "normal" and values["norm"] == "none" else "ok")

    summary = pd.read_csv(d / "summary.csv")
    assert len(summary) == sum(len(pd.read_csv(d / "runs" / n / "layers.csv")) for n in names)
    assert {"init", "norm", "seed", "depth", "width", "batch_size", "activation", "status", "layer", "std"} <= set(
        summary.columns
    )
    for name in names:
        rows = summary[summary["run"] == name]
        own = pd.read_csv(d / "runs" / name / "layers.csv")
        np.testing.assert_array_equal(rows[own.columns].to_numpy(), own.to_numpy())
        values = dict(kv.split("=") for kv in name.split(","))
        assert set(rows["init"]) == {values["init"]} and set(rows["seed"]) == {int(values["seed"])}
    diverged = summary[summary["status"] == "diverged"]
    assert set(diverged["init"]) == {"normal"} and set(diverged["norm"]) == {"none"}

    # aggregate: mean and sd (ddof 1) over seeds of the finite values, per config per layer
    agg = pd.read_csv(d / "aggregate.csv")
    lengths = summary.groupby(["init", "norm"])["layer"].max() + 1
    assert len(agg) == lengths.sum() and lengths.sort_values().tolist()[1:] == [5, 5, 5]
    assert lengths[("normal", "none")] < 5  # stops at its diverging layer
    for (init, norm), _ in summary.groupby(["init", "norm"]):
        runs = [pd.read_csv(d / "runs" / f"init={init},norm={norm},seed={s}" / "layers.csv") for s in (0, 1)]
        for layer in range(max(len(t) for t in runs)):
            vals = np.array([t["std"][layer] for t in runs if layer < len(t)])
            vals = vals[np.isfinite(vals)]
            row = agg[(agg["init"] == init) & (agg["norm"] == norm) & (agg["layer"] == layer)]
            assert len(row) == 1 and row["seeds"].item() == 2
            if len(vals):
                assert row["std_mean"].item() == pytest.approx(vals.mean(), rel=1e-12)
            if len(vals) > 1:
                assert row["std_sd"].item() == pytest.approx(vals.std(ddof=1), rel=1e-9)
    png = d / "std_by_layer.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_existing_sweep_needs_resume(cli, tmp_path):
    path = write_sweep(tmp_path, grid={"init": ["kaiming"]}, seeds=[0])
    out = tmp_path / "out"
    assert sweep_cli(cli, path, "--out", out).exit_code == 0
    r = sweep_cli(cli, path, "--out", out)
    assert r.exit_code == 2 and "--resume" in r.output and len(r.output.strip().splitlines()) == 1
    path.write_text(path.read_text().replace("seeds: [0]", "seeds: [0, 1]").replace("- 0\n", "- 0\n- 1\n"))
    r = sweep_cli(cli, path, "--out", out, "--resume")
    assert r.exit_code == 2 and "differs" in r.output


def test_resume_after_a_kill_ends_with_the_same_files(cli, tmp_path, monkeypatch):
    import bncli.studies.depth as depth

    path = write_sweep(tmp_path)
    clean = tmp_path / "clean"
    assert sweep_cli(cli, path, "--out", clean).exit_code == 0

    real, calls = depth.run, []

    def killed_at_fourth(cfg, device, progress=None):
        calls.append(cfg)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(cfg, device, progress)

    monkeypatch.setattr(depth, "run", killed_at_fourth)
    out = tmp_path / "out"
    r = sweep_cli(cli, path, "--out", out)
    assert r.exit_code == 130, r.output
    d = out / "sweeps" / "s"
    order = [p.name for p in sweeps.plan(path, out).points]
    runs = [d / "runs" / n for n in order[:4]]
    assert sorted(p.name for p in (d / "runs").iterdir()) == sorted(order[:4])
    status = [json.loads((p / "meta.json").read_text())["status"] for p in runs]
    assert status == ["ok", "ok", "ok", "interrupted"], status
    assert pd.read_csv(d / "summary.csv")["run"].nunique() == 3  # what finished, and only that
    assert "interrupted: 3 of 8 runs finished" in r.output
    # a hard kill (no Python cleanup) leaves meta.json saying running: resume must redo it too
    first = runs[0]
    kept = (first / "meta.json").read_text()
    hard = d / "runs" / "init=normal,norm=none,seed=1"
    hard.mkdir()
    (hard / "meta.json").write_text(json.dumps({"status": "running"}))
    (hard / "junk.tmp").write_text("half")

    monkeypatch.setattr(depth, "run", real)
    r = sweep_cli(cli, path, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert "resumed: 3 of 8 runs were already done" in r.output
    assert (first / "meta.json").read_text() == kept  # skipped, not rerun
    assert file_bytes(d) == file_bytes(clean / "sweeps" / "s")
    assert (d / "std_by_layer.png").stat().st_size > 0


@pytest.mark.parametrize("fail_fast", [False, True])
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(cli, tmp_path, monkeypatch, fail_fast):
    import bncli.studies.depth as depth

    real = depth.run

    def fails_for_normal_batchnorm(cfg, device, progress=None):
        if cfg.init == "normal" and cfg.norm == "batchnorm":
            raise RuntimeError("boom\nsecond line")
        return real(cfg, device, progress)

    monkeypatch.setattr(depth, "run", fails_for_normal_batchnorm)
    out = tmp_path / "out"
    r = sweep_cli(cli, write_sweep(tmp_path), "--out", out, *(["--fail-fast"] if fail_fast else []))
    assert r.exit_code == 1, r.output
    d = out / "sweeps" / "s"
    bad = d / "runs" / "init=normal,norm=batchnorm,seed=0"
    meta = json.loads((bad / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: boom"
    assert not (bad / "layers.csv").exists() and (bad / "config.yaml").exists()
    assert "failed init=normal,norm=batchnorm,seed=0: RuntimeError: boom" in r.output
    summary = pd.read_csv(d / "summary.csv")
    failed = summary[summary["status"] == "failed"]
    ran = sorted(p.name for p in (d / "runs").iterdir())
    if fail_fast:
        assert "--fail-fast" in r.output
        assert len(ran) == 5 and set(failed["run"]) == {bad.name}  # kaiming x 4, then the failure
    else:
        assert len(ran) == 8 and set(failed["run"]) == {bad.name, bad.name[:-1] + "1"}
        assert "8 runs: 4 ok, 2 diverged, 2 failed" in r.output
    assert len(failed) == len(set(failed["run"]))  # one row per failed run
    agg = pd.read_csv(d / "aggregate.csv")
    assert not ((agg["init"] == "normal") & (agg["norm"] == "batchnorm")).any()


def test_workers_give_the_same_files_as_sequential(cli, tmp_path):
    """Workers get cpus // 2 torch threads each; every op bncli runs gives the same bits on any
    number of threads, so a pool writes the same bytes as a sequential sweep."""
    path = write_sweep(tmp_path, grid={"init": ["kaiming", "orthogonal"], "norm": ["batchnorm", "none"]})
    assert sweep_cli(cli, path, "--out", tmp_path / "seq").exit_code == 0
    r = sweep_cli(cli, path, "--out", tmp_path / "par", "--workers", 2)
    assert r.exit_code == 0, r.output
    par, seq = file_bytes(tmp_path / "par" / "sweeps" / "s"), file_bytes(tmp_path / "seq" / "sweeps" / "s")
    assert len(par) == 2 + 1 + 8 * 2
    assert [k for k in par if par[k] != seq.get(k)] == []
    meta = json.loads(
        (tmp_path / "par" / "sweeps" / "s" / "runs" / "init=orthogonal,norm=none,seed=1" / "meta.json").read_text()
    )
    assert meta["status"] == "ok" and meta["torch_threads"] == max(1, sweeps._cpus() // 2)


def test_missing_sweep_file_is_named_as_such(cli, tmp_path):
    r = sweep_cli(cli, tmp_path / "missing.yaml", "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert r.output == f"Error: sweep file: file not found: {tmp_path / 'missing.yaml'}\n"
    assert not (tmp_path / "out").exists()


def test_resume_redoes_what_is_not_really_there(cli, tmp_path):
    path = write_sweep(tmp_path, seeds=(0,))
    out = tmp_path / "out"
    assert sweep_cli(cli, path, "--out", out).exit_code == 0
    runs = out / "sweeps" / "s" / "runs"
    names = sorted(p.name for p in runs.iterdir())
    before = file_bytes(out)
    (runs / names[0] / "layers.csv").unlink()  # meta.json says ok, the CSV is gone
    shutil.rmtree(runs / names[1])
    (runs / names[1]).write_text("not a run")  # a stray file in a run's place
    shutil.rmtree(runs / names[2])
    (runs / names[2]).symlink_to(tmp_path)  # a symlink in a run's place
    (runs / names[3] / ".meta.json.abc.tmp").write_text("{")  # a write a crash cut short
    r = sweep_cli(cli, path, "--out", out, "--resume")
    assert r.exit_code == 0 and "resumed: 1 of 4 runs was already done" in r.output, r.output
    assert file_bytes(out) == before and not (runs / names[2]).is_symlink()
