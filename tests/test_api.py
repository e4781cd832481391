"""The Python API (bncli.api, re-exported by `import bncli`): the same studies, validation and
files as the command line, called directly."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import file_bytes, meta_of, sweep_file

import bncli
from bncli import BncliError, RunError


def fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_bncli_loads_no_torch_until_used():
    out = fresh(
        "import sys, bncli\n"
        "print('before', [m for m in ('torch', 'pandas', 'pydantic', 'matplotlib') if m in sys.modules])\n"
        "r = bncli.depth_study(depth=5, width=8, batch_size=4, device='cpu')\n"
        "print('after', 'torch' in sys.modules, r.status, len(r.table))"
    )
    assert "before []" in out and "after True ok 5" in out


def test_depth_study_returns_the_table_status_and_info():
    r = bncli.depth_study(depth=50, init="xavier", norm="none", width=32, device="cpu")
    assert r.status == "ok" and r.dir is None  # nothing written unless asked
    assert list(r.table.columns) == [
        "layer",
        "mean",
        "std",
        "abs_max",
        "zero_fraction",
        "chan_sq_mean",
        "chan_var",
        "erank",
        "grad_std",
        "weight_grad_norm",
        "theory_std",
    ]
    assert r.table["layer"].tolist() == list(range(50))
    assert r.table[["erank", "grad_std", "weight_grad_norm"]].isna().all().all()  # off: NaN, not ""
    assert r.table["std"].dtype == np.float64 and np.isfinite(r.table["std"]).all()
    assert r.info == {"diverged_at": None, "layers_done": 50}
    assert r.meta["study"] == "depth-study" and r.settings["init"] == "xavier"


def test_the_api_equals_the_study_module_and_the_cli(cli):
    from helpers import run_depth

    r = bncli.depth_study(depth=10, width=16, device="cpu", seed=3)
    _, direct = run_depth(depth=10, width=16, seed=3)
    pd.testing.assert_frame_equal(r.table, direct.table)
    done = cli("depth-study", "--depth", 10, "--width", 16, "--device", "cpu", "--seed", 3, "--name", "c")
    assert done.exit_code == 0, done.output
    saved = r.save(cli.out.parent / "api", name="c")
    assert saved == cli.out.parent / "api" / "depth-study" / "c"
    assert file_bytes(saved) == file_bytes(cli.out / "depth-study" / "c")  # layers.csv and config.yaml


def test_bad_input_raises_the_clis_message_naming_fields(cli):
    with pytest.raises(BncliError) as e:
        bncli.depth_study(depth=0)
    assert str(e.value) == "depth: Input should be greater than or equal to 1 (got 0)"
    r = cli("depth-study", "--depth", 0)
    assert r.output.strip() == f"Error: --{e.value}"
    with pytest.raises(BncliError, match="dpeth: not a field of depth-study; did you mean 'depth'\\?"):
        bncli.depth_study(dpeth=3)
    with pytest.raises(BncliError, match="study: 'nope' is not one of depth-study, running-stats, convergence"):
        bncli.run("nope")


def test_out_writes_as_it_goes_and_save_refuses_twice(tmp_path):
    r = bncli.running_stats(momentum=0.3, dims=2, device="cpu", out=tmp_path, name="rs")
    assert r.dir == tmp_path / "running-stats" / "rs" and meta_of(r.dir)["status"] == "ok"
    assert yaml.safe_load((r.dir / "config.yaml").read_text())["dims"] == 2
    pd.testing.assert_frame_equal(bncli.open_run(r.dir).table, r.table, check_dtype=False)
    assert r.info["shapes"]["running_mean"] == [6]
    with pytest.raises(BncliError, match="already saved"):
        r.save(tmp_path)


def test_convergence_and_a_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("iterations: 30\nbatch_size: 8\n")
    r = bncli.convergence(f, momentum=[0.1], device="cpu", dtype="float64")
    assert r.settings["iterations"] == 30 and r.settings["momentum"] == [0.1]
    assert set(r.table["estimator"]) == {"ema-0.1", "cumulative", "precise"} and len(r.table) == 30 * 3 * 4
    path = r.save(tmp_path / "out")
    assert (path / "convergence.png").stat().st_size > 10_000  # a single run's own plot


def test_a_failed_run_raises_run_error_once_recorded(tmp_path, monkeypatch):
    from bncli.studies import depth

    def boom(cfg, device, progress=None):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(depth, "run", boom)
    with pytest.raises(RunError, match=r"the run failed: RuntimeError: boom \(run recorded failed in .*/f\)$"):
        bncli.depth_study(depth=3, width=8, device="cpu", out=tmp_path, name="f")
    assert meta_of(tmp_path / "depth-study" / "f")["status"] == "failed"
    with pytest.raises(RunError, match=r"\(nothing saved\)"):
        bncli.depth_study(depth=3, width=8, device="cpu")


def test_sweep_and_plot(tmp_path):
    path = sweep_file(
        tmp_path,
        study="convergence",
        base={"iterations": 20, "batch_size": 4},
        grid={"momentum": [0.1, 0.5]},
        seeds=[0, 1],
    )
    out = bncli.sweep(path, tmp_path / "out")
    assert out.total == 4 and out.failed == 0 and out.plot == out.dir / "convergence.png"
    saved = bncli.open_sweep(out.dir)
    assert saved.study == "convergence" and saved.keys == ["momentum"]
    assert set(saved.table["estimator"]) == {"ema-0.1", "ema-0.5", "cumulative", "precise"}
    agg = pd.read_csv(out.dir / "aggregate.csv")
    assert set(agg["seeds"]) == {2} and len(agg) == 2 * 20 * 3 * 4
    png = bncli.plot_runs([out.dir], tmp_path / "v.png", metric="var_error")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_study_is_a_function_with_its_docstring():
    for name in bncli.studies.names():
        fn = getattr(bncli, name.replace("-", "_"))
        assert fn.__name__ == name.replace("-", "_") and bncli.studies.get(name).__doc__ in fn.__doc__
    with pytest.raises(AttributeError):
        bncli.no_such_thing  # noqa: B018


def test_the_readme_example_prints_what_the_readme_shows(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout == shown


# -- listing, showing and a sweep's numbers ---------------------------------------------------------


def test_list_runs_filters_as_bncli_runs_lists(cli, tmp_path):
    out = tmp_path / "r"
    for init in ("kaiming", "xavier", "normal"):
        bncli.depth_study(depth=4, width=8, init=init, norm="none", device="cpu", out=out, name=init)
    bncli.running_stats(out=out, name="rs")
    every = bncli.list_runs(out)
    assert sorted(e["name"] for e in every) == [
        "depth-study/kaiming",
        "depth-study/normal",
        "depth-study/xavier",
        "running-stats/rs",
    ]
    assert [e["name"] for e in bncli.list_runs(out, study="running-stats")] == ["running-stats/rs"]
    picked = bncli.list_runs(out, where=["init=xavier", "init=normal"])
    assert sorted(e["name"] for e in picked) == ["depth-study/normal", "depth-study/xavier"]
    assert bncli.list_runs(out, where={"init": ["xavier", "normal"]}) == picked  # a mapping says the same
    assert [e["name"] for e in bncli.list_runs(out, where={"init": "xavier"})] == ["depth-study/xavier"]
    assert bncli.list_runs(out, status="diverged") == [] and len(bncli.list_runs(out, status="ok")) == 4
    import json

    r = cli("runs", out, "--where", "init=xavier", "--where", "init=normal", "--format", "json")
    assert json.loads(r.output) == picked  # the command prints what the API returns
    with pytest.raises(BncliError, match="OUT: .* is not a directory"):
        bncli.list_runs(tmp_path / "nope")


def test_show_gives_a_run_a_sweep_or_a_listing(tmp_path):
    out = tmp_path / "r"
    r = bncli.depth_study(depth=5, width=8, device="cpu", out=out, name="a")
    shown = bncli.show(r.dir)
    assert isinstance(shown, bncli.Run)
    pd.testing.assert_frame_equal(shown.table, r.table, check_dtype=False)  # the files hold every bit
    assert shown.meta["status"] == "ok" and shown.settings["depth"] == 5
    assert [e["name"] for e in bncli.show(out)] == ["depth-study/a"]  # a results directory: its listing
    outcome = bncli.sweep(out=out, study="depth-study", base={"depth": 4, "width": 8}, grid={"norm": ["none"]})
    assert isinstance(bncli.show(outcome.dir), bncli.SavedSweep)
    with pytest.raises(BncliError, match="PATH: .* is not a directory"):
        bncli.show(out / "nope")


def test_a_sweeps_summary_is_numbers_in_its_json(cli, tmp_path):
    """--format json of a sweep carries each config's summary as numbers, equal to the ones
    computed here from the runs' own CSVs: the last layer's std over seeds, its sd, the count."""
    import json

    out = tmp_path / "o"
    grid = ["--grid", "init=kaiming,normal", "--grid", "norm=batchnorm,none"]
    args = ["sweep", "--study", "depth-study", "--set", "depth=80", "--set", "width=32", *grid, "--seeds", "0-2"]
    r = cli(*args, "--out", out, "--no-progress", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout if hasattr(r, "stdout") else r.output)
    assert doc["keys"] == ["init", "norm"] and len(doc["configs"]) == 4
    runs = out / "sweeps" / doc["dir"].rsplit("/", 1)[-1] / "runs"
    for c in doc["configs"]:
        init, norm = c["settings"]["init"], c["settings"]["norm"]
        tables = [pd.read_csv(runs / f"init={init},norm={norm},seed={s}" / "layers.csv") for s in range(3)]
        status = [meta_of(runs / f"init={init},norm={norm},seed={s}")["status"] for s in range(3)]
        last = [t["std"].iloc[-1] for t, st in zip(tables, status, strict=True) if st == "ok"]
        summary = c["summary"]
        assert c["seeds"] == 3 and c["failed"] == 0
        assert summary["diverged"] == {"count": status.count("diverged"), "of": 3}
        assert summary["last-layer std"]["n"] == len(last) and summary["last-layer std"]["of"] == 3
        if len(last) >= 2:
            assert summary["last-layer std"]["mean"] == pytest.approx(np.mean(last), rel=1e-12)
            assert summary["last-layer std"]["sd"] == pytest.approx(np.std(last, ddof=1), rel=1e-12)
        finite = np.concatenate([t["std"].to_numpy(float) for t in tables])
        finite = finite[np.isfinite(finite)]
        assert summary["min std"] == pytest.approx(finite.min(), rel=1e-12)
        assert summary["max std"] == pytest.approx(finite.max(), rel=1e-12)
    normal_none = next(c for c in doc["configs"] if c["settings"] == {"init": "normal", "norm": "none"})
    assert normal_none["summary"]["diverged"]["count"] == 3  # N(0, 1) weights overflow float32 by layer 64
    assert normal_none["summary"]["last-layer std"] == {"mean": None, "sd": None, "n": 0, "of": 3}


def test_a_mean_over_the_seeds_that_did_not_diverge_says_how_many():
    """The last-layer std is a mean over the seeds that did not diverge: where some did, its cell
    says over how many of them, as its JSON does."""
    from bncli import report
    from bncli.studies import depth

    def run(status, stds):
        return pd.DataFrame({"layer": range(len(stds)), "std": stds, "status": status})

    runs = [run("ok", [0.5, 0.6]), run("ok", [0.5, 0.8]), run("diverged", [0.5, float("nan")])]
    got = depth.summarize(runs)
    from bncli.studies.base import MeanSd

    assert got["last-layer std"] == MeanSd(pytest.approx(0.7), pytest.approx(np.std([0.6, 0.8], ddof=1)), 2, 3)
    assert report.cell(got["last-layer std"]) == "0.700 ± 0.141 (2/3)" and report.cell(got["diverged"]) == "1/3"
    assert report.cell(depth.summarize(runs[:2])["last-layer std"]) == "0.700 ± 0.141"  # over all: said by seeds
    assert report.json_number(got["last-layer std"]) == {
        "mean": 0.7,
        "sd": pytest.approx(0.1414, abs=1e-4),
        "n": 2,
        "of": 3,
    }
