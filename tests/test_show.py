"""bncli show: a saved run or sweep re-rendered from its files, with the numbers it saved."""

import numpy as np
import pandas as pd
from helpers import sweep_file, table_rows


def test_show_a_depth_run_reproduces_its_table_and_summary(cli):
    r = cli(
        "depth-study",
        "--depth",
        40,
        "--width",
        16,
        "--init",
        "normal",
        "--norm",
        "none",
        "--init-std",
        10,
        "--every",
        5,
        "--name",
        "d",
    )
    assert r.exit_code == 0, r.output
    assert "diverged" in r.output
    shown = cli("show", cli.out / "depth-study" / "d", "--every", 5)
    assert shown.exit_code == 0, shown.output
    assert table_rows(shown.output) == table_rows(r.output) and len(table_rows(r.output)) >= 3
    summary = [ln for ln in r.output.splitlines() if ln.startswith(("std over", "diverged:"))]
    assert len(summary) == 2 and all(ln in shown.output.splitlines() for ln in summary)
    assert "status: diverged" in shown.output


def test_show_a_running_stats_run(cli):
    r = cli("running-stats", "--momentum", "0.1", "--dims", 2, "--name", "r")
    assert r.exit_code == 0, r.output
    shown = cli("show", cli.out / "running-stats" / "r")
    assert shown.exit_code == 0, shown.output
    assert table_rows(shown.output) == table_rows(r.output)
    assert "torch matches the update formula on all 24 values (running_mean and running_var, 6 channels" in shown.output
    assert "check on a random batch" in shown.output and "matches the formula" in shown.output
    assert "running_mean (6,)" in shown.output


def test_show_a_sweep_gives_mean_and_sd_over_seeds(cli, tmp_path):
    path = sweep_file(
        tmp_path,
        "s",
        base={"depth": 4, "width": 8, "batch_size": 4},
        grid={"norm": ["batchnorm", "none"]},
        seeds=[0, 1, 2],
    )
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    d = tmp_path / "out" / "sweeps" / "s"
    shown = cli("show", d)
    assert shown.exit_code == 0, shown.output
    assert table_rows(shown.output) == table_rows(r.output)
    for norm in ("batchnorm", "none"):
        tables = [pd.read_csv(d / "runs" / f"norm={norm},seed={s}" / "layers.csv") for s in (0, 1, 2)]
        last = np.array([t["std"].iloc[-1] for t in tables])
        every = np.concatenate([t["std"] for t in tables])
        cells = next(row for row in table_rows(shown.output) if row[0] == norm)
        assert cells == [
            norm,
            "3",
            f"{last.mean():.3f} ± {last.std(ddof=1):.3f}",
            f"{every.min():.3f}",
            f"{every.max():.3f}",
            "0/3",
        ]
    assert "6 runs: 6 ok, 0 diverged, 0 failed" in shown.output


def test_show_refuses_what_is_not_a_run(cli, tmp_path):
    r = cli("show", tmp_path)
    assert r.exit_code == 2 and "not a run or sweep directory" in r.output
    r = cli("show", tmp_path / "missing")
    assert r.exit_code == 2 and "not a directory" in r.output


def test_a_running_stats_sweep_summary_against_the_formula(cli, tmp_path):
    # constant batches have variance 0, so running_var = (1 - m)^T, and 0 for the cumulative average
    path = sweep_file(tmp_path, "m", "running-stats", base={"iterations": 3}, grid={"momentum": [0.5, None, 0.1]})
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    cells = {c[0]: c for c in table_rows(r.output)}
    assert cells["0.5"][1:3] == ["1", f"{0.5**3:.3f}"] and cells["0.5"][-1] == "1/1"
    assert cells["none"][2] == "0.000" and cells["0.1"][2] == f"{0.9**3:.3f}"
    summary = pd.read_csv(tmp_path / "out" / "sweeps" / "m" / "summary.csv")
    assert len(summary) == 3 * 3 * 5 and list(summary["momentum"].unique()) == ["0.5", "none", "0.1"]
    assert (tmp_path / "out" / "sweeps" / "m" / "running_stats.png").stat().st_size > 5000


def test_show_opens_a_convergence_run_saved_under_its_old_name(cli):
    import shutil

    assert cli("convergence", "--iterations", 20, "--name", "c").exit_code == 0
    new = cli.out / "convergence" / "c"
    old = cli.out / "running-stats-convergence" / "c"
    shutil.copytree(new, old)
    meta = (old / "meta.json").read_text().replace('"study": "convergence"', '"study": "running-stats-convergence"')
    (old / "meta.json").write_text(meta)
    shown, again = cli("show", old), cli("show", new)
    assert shown.exit_code == 0 and table_rows(shown.output) == table_rows(again.output)


def test_runs_lists_filters_and_formats(cli, tmp_path):
    import json

    assert cli("depth-study", "--depth", 4, "--width", 8, "--name", "plain").exit_code == 0
    r = cli("depth-study", "--depth", 4, "--width", 8, "--init", "normal", "--norm", "none", "--name", "n")
    assert r.exit_code == 0
    assert cli("running-stats", "--name", "rs").exit_code == 0
    path = sweep_file(tmp_path, base={"depth": 3, "width": 4, "batch_size": 2}, grid={"init": ["kaiming", "xavier"]})
    assert cli("sweep", path, "--out", cli.out, "--no-progress").exit_code == 0
    (cli.out / "depth-study" / "broken").mkdir()
    (cli.out / "depth-study" / "broken" / "meta.json").write_text("{")
    listed = json.loads(cli("runs", cli.out, "--format", "json").output)
    by_name = {e["name"]: e for e in listed}
    assert set(by_name) == {"depth-study/plain", "depth-study/n", "running-stats/rs", "sweeps/s", "depth-study/broken"}
    assert by_name["depth-study/n"]["settings"] == {"depth": 4, "width": 8, "init": "normal", "norm": "none"}
    assert by_name["sweeps/s"]["status"] == "2 ok"
    assert by_name["sweeps/s"]["settings"] == {"init": ["kaiming", "xavier"]}
    assert by_name["depth-study/broken"]["status"] == "damaged"
    starts = [e["started"] for e in listed if e["started"]]
    assert starts == sorted(starts, reverse=True)  # newest first
    r = cli("runs", cli.out, "--where", "init=normal", "--format", "csv")
    assert r.exit_code == 0 and [line.split(",")[2] for line in r.output.splitlines()[1:]] == ["depth-study/n"]
    r = cli("runs", cli.out, "--where", "init=xavier", "--study", "depth-study")
    assert r.exit_code == 0 and "sweeps/s" in r.output and "1 of 5 listed" in r.output
    r = cli("runs", cli.out, "--where", "init=normal", "--where", "init=xavier", "--format", "csv")  # either value
    assert sorted(line.split(",")[2] for line in r.output.splitlines()[1:]) == ["depth-study/n", "sweeps/s"]
    r = cli("runs", cli.out, "--where", "init=normal", "--where", "norm=none", "--format", "csv")  # both keys
    assert [line.split(",")[2] for line in r.output.splitlines()[1:]] == ["depth-study/n"]
    assert "--where: expected KEY=VALUE" in cli("runs", cli.out, "--where", "init").output
    listing = cli("show", cli.out)  # a results directory: its listing, not an error
    assert listing.exit_code == 0 and "5 of 5 listed" in listing.output


def test_a_default_given_explicitly_or_followed_is_not_listed_as_a_change(cli):
    """residual's default follows arch (1 for resnet and transformer, 0 for an mlp): passing it, or
    leaving it, is no change; another value is. Lists read back from config.yaml equal their defaults."""
    from bncli import results

    resnet = ["--arch", "resnet", "--stages", 1, "--blocks", 1, "--channels", 4, "--image-size", 4]
    net = "arch=resnet channels=4 image_size=4 stages=1 blocks=1"
    cases = {
        "a": (["--depth", 3, "--residual", 0], "depth=3"),
        "b": (["--depth", 3, "--residual", 1], "depth=3 residual=1"),
        "c": ([*resnet, "--residual", 1], f"depth=1 {net}"),
        "d": ([*resnet, "--residual", 0.5], f"depth=1 residual=0.5 {net}"),
        "e": (["--depth", 3, "--init-std", "1.0", "--norm", "batchnorm", "--dtype", "float32"], "depth=3"),
    }  # fmt: skip
    for name, (args, says) in cases.items():
        assert cli("depth-study", *args, "--width", 4, "--name", name, "-q").exit_code == 0
        run = results.open_run(cli.out / "depth-study" / name)
        assert results.settings_line(run) == "settings: " + says.replace("depth=3", "depth=3 width=4", 1).replace(
            "depth=1", "depth=1 width=4", 1
        ), name
    assert cli("running-stats", "--iterations", 3, "--feature-shape", 1, "--name", "r", "-q").exit_code == 0
    run = results.open_run(cli.out / "running-stats" / "r")
    assert results.settings_line(run) == "settings: iterations=3"  # feature_shape [1] is its default (1,)
    r = cli("runs", cli.out, "--format", "csv")
    assert r.exit_code == 0 and ",depth=3 width=4 residual=1," in r.output and ",depth=3 width=4," in r.output
