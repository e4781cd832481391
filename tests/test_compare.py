"""bncli compare: saved runs side by side, checked against their own CSVs; bncli show's settings line."""

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import table_rows

import bncli
from bncli import BncliError, comparison, studies

SMALL = {"depth": 8, "width": 8, "batch_size": 8, "device": "cpu"}


def saved(tmp_path, name, study="depth-study", **fields):
    fields = {**SMALL, **fields} if study == "depth-study" else {"device": "cpu", **fields}
    return bncli.run(study, **fields).save(tmp_path / "results", name=name)


def test_two_runs_side_by_side_equal_their_csvs(tmp_path):
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b", init="xavier", seed=3)
    c = bncli.compare(a, b)
    ta, tb = pd.read_csv(a / "layers.csv"), pd.read_csv(b / "layers.csv")
    assert c.study == "depth-study" and c.metric == "std" and c.mode == "ratio" and c.names == ["a", "b"]
    assert c.settings == {"init": ["kaiming", "xavier"], "seed": [0, 3]}
    assert c.table["layer"].tolist() == list(range(8))
    np.testing.assert_array_equal(c.table["a"], ta["std"])
    np.testing.assert_array_equal(c.table["b"], tb["std"])
    np.testing.assert_allclose(c.table["b / a"], tb["std"] / ta["std"], rtol=1e-15)
    assert c.first == 0 and not c.agree and not c.identical and c.missing == {}
    assert comparison.verdict(c)[0].startswith(f"first difference: layer 0: b has {tb['std'][0]:.4g}, a ")


def test_the_first_difference_is_the_row_that_was_changed(tmp_path):
    a = saved(tmp_path, "a")
    b = tmp_path / "results" / "depth-study" / "b"
    shutil.copytree(a, b)
    t = pd.read_csv(a / "layers.csv")
    t.loc[2, "std"] *= 1 + 3e-7  # within rtol 1e-6: agrees
    t.loc[5, "std"] *= 1 + 3e-6  # beyond it: the first difference
    t.loc[6, "std"] *= 2
    t.to_csv(b / "layers.csv", index=False)
    c = bncli.compare(a, b)
    assert c.first == 5 and c.row_id(c.first) == "layer 5" and c.differs.tolist()[:7] == [False] * 5 + [True] * 2
    assert c.settings == {} and not c.identical
    assert comparison.verdict(c)[0].endswith("2 of 8 shared rows differ")
    assert bncli.compare(a, b, rtol=1e-5).first == 6
    assert bncli.compare(a, b, rtol=0.0).first == 2
    assert bncli.compare(a, b, rtol=0.0, atol=1.0).agree  # the absolute floor alone: std < 1 here


def test_a_run_against_itself_is_identical_even_where_it_diverged(cli, tmp_path):
    d = saved(tmp_path, "d", depth=40, init="normal", init_std=10.0, norm="none")
    c = bncli.compare(d, d)
    assert c.statuses == ["diverged", "diverged"] and np.isnan(c.table["d#1"].iloc[-1])  # nan agrees with nan
    assert c.identical and c.names == ["d#1", "d#2"]
    r = cli("compare", d, d)
    assert r.exit_code == 0, r.output
    assert "identical: the same settings and exactly the same std in all 32 rows" in r.output


def test_runs_of_different_lengths_show_the_missing_rows(cli, tmp_path):
    long, short = saved(tmp_path, "long", depth=10), saved(tmp_path, "short", depth=6)
    c = bncli.compare(long, short)  # layer i's weights depend on (seed, i) only: the first 6 layers agree
    assert c.settings == {"depth": [10, 6]} and c.missing == {"short": 4} and c.first is None and not c.agree
    assert c.present["short"].tolist() == [True] * 6 + [False] * 4
    assert comparison.verdict(c) == [
        "agree: std is the same within rtol 1e-06, atol 1e-12 in all 6 rows every run holds",
        "missing: short (ok) lacks 4 of 10 rows, layer 6 to layer 9",
    ]
    r = cli("compare", long, short)
    assert r.exit_code == 0, r.output
    rows = table_rows(r.output)
    assert rows[:2] == [["setting", "long", "short"], ["depth", "10", "6"]]  # the settings table first
    assert rows[-1][0] == "9" and rows[-1][2:] == ["missing", "-"]
    assert "missing: short (ok) lacks 4 of 10 rows" in r.output


def test_every_thins_the_rows_keeping_the_first_difference(tmp_path):
    a = saved(tmp_path, "a", depth=10)
    b = tmp_path / "results" / "depth-study" / "b"
    shutil.copytree(a, b)
    t = pd.read_csv(a / "layers.csv")
    t.loc[5, "std"] += 1
    t.to_csv(b / "layers.csv", index=False)
    c = bncli.compare(a, b)
    assert c.rows(4) == [0, 4, 5, 8, 9] and c.rows() == list(range(10))
    assert c.frame(4)["layer"].tolist() == [0, 4, 5, 8, 9]
    assert [r["layer"] for r in c.to_dict(4)["rows"]] == [0, 4, 5, 8, 9]
    short = saved(tmp_path, "short", depth=7)  # it stops at layer 6: that row is shown, then 7 (the first gap)
    assert bncli.compare(a, short).rows(4) == [0, 4, 6, 7, 8, 9]


def test_difference_where_values_cross_zero(tmp_path):
    a, b = saved(tmp_path, "a", activation="linear"), saved(tmp_path, "b", activation="linear", seed=1)
    ta, tb = pd.read_csv(a / "layers.csv"), pd.read_csv(b / "layers.csv")
    assert (ta["mean"] < 0).any() and (ta["mean"] > 0).any()
    c = bncli.compare(a, b, metric="mean")
    assert c.mode == "difference" and c.change_columns == ["b - a"]
    # to an ulp: pandas 2.0's default CSV parser can be one ulp off the round-trip value bncli reads
    np.testing.assert_allclose(c.table["b - a"], tb["mean"] - ta["mean"], rtol=1e-13, atol=0)
    assert bncli.compare(a, b, metric="std").mode == "ratio"


def test_each_study_has_its_default_metric_and_row_ids(tmp_path):
    a, b = saved(tmp_path, "a", "convergence", iterations=3), saved(tmp_path, "b", "convergence", iterations=3, seed=1)
    ta, tb = pd.read_csv(a / "convergence.csv"), pd.read_csv(b / "convergence.csv")
    c = bncli.compare(a, b)
    assert c.metric == "var_error" and c.mode == "ratio" and c.ids == ["iteration", "estimator", "channel"]
    assert c.table["estimator"].tolist() == ta["estimator"].tolist()  # the runs' own row order
    np.testing.assert_allclose(c.table["b / a"], tb["var_error"] / ta["var_error"], rtol=1e-13, atol=0)
    assert c.row_id(1) == f"iteration 0, estimator {ta['estimator'][1]}, channel 1"
    r = saved(tmp_path, "r", "running-stats")
    assert bncli.compare(r, r).metric == "running_var"


def test_three_runs_and_in_memory_runs():
    runs = [bncli.depth_study(**SMALL, seed=s) for s in (0, 0, 1)]
    c = bncli.compare(*runs, metric="abs_max")
    assert c.names == ["run 1", "run 2", "run 3"] and c.change_columns == ["run 2 / run 1", "run 3 / run 1"]
    assert c.settings == {"seed": [0, 0, 1]}
    np.testing.assert_array_equal(c.table["run 3 / run 1"], runs[2].table["abs_max"] / runs[0].table["abs_max"])
    assert (c.table["run 2 / run 1"] == 1).all() and c.first == 0
    assert comparison.verdict(c)[0].startswith("first difference: layer 0: run 3 has")


def test_a_new_study_compares_on_its_metric(monkeypatch, tmp_path):
    import toy_study

    monkeypatch.setitem(sys.modules, "bncli.studies.toy", toy_study)
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy")
    c = bncli.compare(bncli.toy(steps=3, width=8, device="cpu"), bncli.toy(steps=3, width=8, scale=4.0, device="cpu"))
    assert c.metric == "std" and c.ids == ["step"]
    np.testing.assert_allclose(c.table["run 2 / run 1"], 2.0, rtol=1e-6)  # the same draws, scaled 4 / 2


def test_formats_give_the_same_side_by_side_data(cli, tmp_path):
    long, short = saved(tmp_path, "long", depth=6), saved(tmp_path, "short", depth=4, init="xavier")
    r = cli("compare", long, short, "--format", "csv")
    assert r.exit_code == 0, r.output
    got = pd.read_csv(pd.io.common.StringIO(r.output), keep_default_na=False)
    assert list(got.columns) == ["layer", "long", "short", "short / long", "differs"]
    ta, tb = pd.read_csv(long / "layers.csv"), pd.read_csv(short / "layers.csv")
    assert got["long"].astype(float).tolist() == ta["std"].tolist()
    assert got["short"].tolist()[4:] == ["", ""] and got["differs"].tolist() == ["true"] * 4 + ["", ""]
    assert got["short / long"][:4].astype(float).tolist() == (tb["std"] / ta["std"][:4]).tolist()
    r = cli("compare", long, short, "--format", "json")
    doc = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert doc["settings"] == {"depth": [6, 4], "init": ["kaiming", "xavier"]} and doc["missing"] == {"short": 2}
    assert doc["first_difference"] == {"layer": 0} and doc["agree"] is False and doc["mode"] == "ratio"
    assert doc["rows"][5] == {
        "layer": 5,
        "long": ta["std"][5],
        "short": None,
        "short / long": None,
        "differs": None,
        "missing": ["short"],
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["{a}"], "RUN: give at least two runs to compare (got 1)"),
        (["{a}", "{r}"], "is a depth-study run but {r} is a running-stats run; compare runs of one study"),
        (
            ["{a}", "{a}", "--metric", "erank"],
            "--metric: 'erank' is not a numeric column of these runs; available: mean, "
            "std, abs_max, zero_fraction, chan_sq_mean, chan_var, theory_std",
        ),
        (["{a}", "{tmp}/nothing"], "RUN: {tmp}/nothing is not a run directory (no meta.json)"),
        (["{a}", "{tmp}/results"], "RUN: {tmp}/results is a results directory, not a run"),
        (["{sweep}", "{a}"], "RUN: {sweep} is a sweep; compare takes run directories"),
        (["{a}", "{bad}"], "{bad}: these results are damaged or incomplete"),
    ],
)
def test_bad_input_is_one_line(cli, tmp_path, args, message):
    paths = {
        "a": saved(tmp_path, "a"),
        "r": saved(tmp_path, "r", "running-stats"),
        "tmp": tmp_path,
        "sweep": tmp_path / "sw",
        "bad": tmp_path / "results" / "depth-study" / "bad",
    }
    paths["sweep"].mkdir()
    (paths["sweep"] / "sweep.yaml").write_text("study: depth-study\n")
    shutil.copytree(paths["a"], paths["bad"])
    (paths["bad"] / "layers.csv").write_text("x,y\n1,2\n")
    r = cli("compare", *[a.format(**paths) for a in args])
    assert r.exit_code == 2 and r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1, r.output
    assert message.format(**paths) in r.output
    with pytest.raises(BncliError, match="--rtol: expected a finite number >= 0"):
        bncli.compare(paths["a"], paths["a"], rtol=float("nan"))


def test_show_names_the_settings_that_differ_from_the_defaults(cli, tmp_path):
    d = saved(tmp_path, "d", init="normal", norm="none")
    shown = cli("show", d)
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == "settings: depth=8 width=8 batch_size=8 init=normal norm=none device=cpu"
    assert cli("running-stats", "--name", "r").exit_code == 0
    assert cli("show", cli.out / "running-stats" / "r").output.splitlines()[0] == "settings: defaults"


def test_csv_keeps_not_computed_missing_and_overflowed_apart(cli, tmp_path):
    """As the runs' own CSVs: a statistic not computed (erank off) and a row a run lacks are
    empty cells, a computed value that overflowed (a diverged layer) is nan, saved or in memory."""
    off, on = saved(tmp_path, "off", depth=4), saved(tmp_path, "on", depth=4, erank=True)
    blown = saved(tmp_path, "blown", depth=6, init="normal", norm="none", init_std=1e10)
    r = cli("compare", off, on, "--metric", "erank", "--format", "csv")
    assert r.exit_code == 0, r.output
    got = pd.read_csv(pd.io.common.StringIO(r.output), keep_default_na=False, dtype=str)
    assert got["off"].tolist() == [""] * 4 and got["on / off"].tolist() == [""] * 4
    assert all(float(v) > 0 for v in got["on"])
    r = cli("compare", on, blown, "--metric", "std", "--format", "csv")
    got = pd.read_csv(pd.io.common.StringIO(r.output), keep_default_na=False, dtype=str)
    blown_std = pd.read_csv(blown / "layers.csv", keep_default_na=False, dtype=str)["std"].tolist()
    assert "nan" in blown_std and got["blown"].tolist()[: len(blown_std)] == blown_std
    assert got["on"].tolist()[4:] == [""] * (len(got) - 4)  # rows the 4-layer run lacks
    in_memory = bncli.compare(
        bncli.depth_study(**{**SMALL, "depth": 4}),
        bncli.depth_study(**{**SMALL, "depth": 4}, erank=True),
        metric="erank",
    )
    frame = in_memory.frame()
    assert frame["run 1"].tolist() == [""] * 4 and frame["run 2 / run 1"].tolist() == [""] * 4
