"""Running-stats convergence: the estimators against closed forms and plain computations."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import load, table_rows

from bncli.errors import BncliError
from bncli.studies import convergence as cv

CPU = torch.device("cpu")


def run(**kw):
    cfg = load("convergence", None, device="cpu", dtype="float64", **kw)
    return cfg, cv.run(cfg, CPU)


def est(table, name, channel=0):
    return table[(table.estimator == name) & (table.channel == channel)].reset_index(drop=True)


@pytest.mark.parametrize("m", [0.01, 0.1, 0.3])
def test_ema_closed_form_on_a_constant_stream(m):
    # a (nearly) constant stream c: r_t = c (1 - (1 - m)^t), var_t = (1 - m)^t (batch var ~ 0)
    _, res = run(momentum=[m], input_mean=[3.0], input_std=[1e-9], iterations=40)
    e = est(res.table, f"ema-{m:g}")
    t = np.arange(1, 41)
    assert e["mean"].to_numpy() == pytest.approx(3 * (1 - (1 - m) ** t), rel=1e-7)
    assert e["var"].to_numpy() == pytest.approx((1 - m) ** t, rel=1e-7, abs=1e-15)


def batches(cfg):
    return [cv.make_batch(cfg, t, CPU) for t in range(cfg.iterations)]


def test_cumulative_and_precise_against_plain_statistics():
    cfg, res = run(iterations=30, batch_size=8, num_features=3, input_mean=[1, -2, 5], input_std=[0.5, 2, 3])
    xs = batches(cfg)
    cum, pre = est(res.table, "cumulative", 2), est(res.table, "precise", 2)
    for t in range(cfg.iterations):
        seen = torch.cat(xs[: t + 1])[:, 2]
        batch_vars = [x[:, 2].var(unbiased=True) for x in xs[: t + 1]]
        # cumulative: the plain average of the batch means and of the unbiased batch variances
        assert cum["mean"][t] == pytest.approx(seen.mean().item(), rel=1e-10)
        assert cum["var"][t] == pytest.approx(torch.stack(batch_vars).mean().item(), rel=1e-10)
        # precise: the mean and unbiased variance of every sample seen (law of total variance)
        assert pre["mean"][t] == pytest.approx(seen.mean().item(), rel=1e-10)
        assert pre["var"][t] == pytest.approx(seen.var(unbiased=True).item(), rel=1e-10)
    truth_sd = 3.0
    assert pre["mean_error"].tolist() == pytest.approx((abs(pre["mean"] - 5) / truth_sd).tolist())
    assert pre["var_error"].tolist() == pytest.approx((abs(pre["var"] / 9 - 1)).tolist())


def test_train_eval_gap_by_hand():
    cfg, res = run(momentum=[0.1], iterations=3, batch_size=6, num_features=2)
    x = batches(cfg)[2][:, 1]
    e = est(res.table, "ema-0.1", 1).iloc[2]
    y_train = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
    y_eval = (x - e["mean"]) / math.sqrt(e["var"] + 1e-5)
    assert e["train_eval_gap"] == pytest.approx((y_eval - y_train).square().mean().sqrt().item(), rel=1e-8)


def test_ema_noise_floor_is_m_over_2_minus_m():
    # stationary EMA of batch means: Var = m / (2 - m) * sigma^2 / B, so E[mean_error^2] = m / ((2 - m) B)
    _, res = run(momentum=[0.3], iterations=3000, batch_size=8, num_features=4)
    e = res.table[(res.table.estimator == "ema-0.3") & (res.table.iteration >= 100)]
    assert (e["mean_error"] ** 2).mean() == pytest.approx(0.3 / (1.7 * 8), rel=0.1)


def test_keras_momentum_maps_to_one_minus_k():
    cfg = load("convergence", None, keras_momentum="0.99,0.9")
    assert cfg.momenta == pytest.approx([0.01, 0.1])
    a = cv.run(load("convergence", None, keras_momentum=[0.9], iterations=20, device="cpu"), CPU).table
    b = cv.run(load("convergence", None, momentum=[0.1], iterations=20, device="cpu"), CPU).table
    assert a[["mean", "var"]].to_numpy() == pytest.approx(b[["mean", "var"]].to_numpy(), rel=1e-6)
    with pytest.raises(BncliError, match="not both"):
        load("convergence", None, keras_momentum=[0.9], momentum=[0.1])


def test_steps_within_one_percent():
    t = pd.DataFrame(
        {
            "iteration": [0, 1, 2, 3] * 2,
            "estimator": ["a"] * 4 + ["b"] * 4,
            "channel": 0,
            "mean_error": [0.5, 0.005, 0.02, 0.001, 0.5, 0.1, 0.1, 0.1],
            "var_error": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        }
    )
    assert cv.steps_within(t) == {"a": 4, "b": None}


def test_layout_and_stream():
    cfg, res = run(iterations=5, num_features=3)
    assert list(res.table.columns) == cv.COLUMNS
    assert len(res.table) == 5 * 5 * 3
    assert res.info["estimators"] == ["ema-0.01", "ema-0.1", "ema-0.3", "cumulative", "precise"]
    big = cv.make_batch(load("convergence", None, batch_size=100_000, dtype="float64"), 0, CPU)
    assert big.mean(0).tolist() == pytest.approx([1.0] * 4, abs=0.03)
    assert big.std(0).tolist() == pytest.approx([2.0] * 4, rel=0.01)


def test_cli_convergence_writes_csv_plot_and_summary(cli):
    r = cli(
        "convergence",
        "--momentum",
        "0.1,0.5",
        "--iterations",
        50,
        "--input-mean",
        "0,1,2,3",
        "--input-std",
        2,
        "--name",
        "c",
    )
    assert r.exit_code == 0, r.output
    first = r.output
    run_dir = cli.out / "convergence" / "c"
    assert "steps to within 1%" in r.output and "precise" in r.output
    t = pd.read_csv(run_dir / "convergence.csv")
    assert set(t.estimator) == {"ema-0.1", "ema-0.5", "cumulative", "precise"} and len(t) == 50 * 4 * 4
    assert (run_dir / "convergence.png").stat().st_size > 10_000
    r = cli("plot", run_dir, "--metric", "var_error")
    assert r.exit_code == 0, r.output
    shown = cli("show", run_dir)  # re-rendered from the files: the same summary rows
    assert shown.exit_code == 0, shown.output
    rows = table_rows(first)
    assert len(rows) > 1 and rows == table_rows(shown.output)


@pytest.mark.parametrize(
    "args,message",
    [
        (["convergence", "--dims", "2"], "No such option: --dims"),
        (["running-stats", "--input-std", "2"], "No such option: --input-std"),
        (["convergence", "--input-std", "0"], "--input-std[0]: Input should be greater than 0"),
        (["convergence", "--input-mean", "1,2"], "input_mean must have 1 or num_features (4) values"),
        (["convergence", "--momentum", "0.1,x"], "comma-separated numbers"),
        (["convergence", "--keras-momentum", "1.5"], "--keras-momentum[0]: Input should be less than or equal to 1"),
    ],
)
def test_convergence_bad_input_is_one_clean_line(cli, args, message):
    r = cli(*args)
    assert r.exit_code == 2, r.output
    said = r.output.replace("'", "").replace(". (", " (").replace("option --", "option: --")  # click versions differ
    assert r.output.startswith("Error: ") and message in said and len(r.output.strip().splitlines()) == 1
    assert not cli.out.exists() or not any(cli.out.rglob("meta.json"))


def test_a_sweeps_steps_to_one_percent_is_a_censored_median_over_every_seed(cli, tmp_path):
    """A mean over the seeds that got within 1% would leave the others out (and look faster):
    the summary is the median over all seeds, a seed that never got there counting as more than
    any, with how many got there; `-` where half or more did not. Computed here from each run's
    CSV with a plain loop over its iterations."""
    import json

    out = tmp_path / "o"
    base = ["--set", "momentum=0.1", "--set", "batch_size=512", "--set", "num_features=2", "--set", "device=cpu"]
    r = cli(
        "sweep",
        "--study",
        "convergence",
        *base,
        "--grid",
        "iterations=40,150",
        "--seeds",
        "0-9",
        "--out",
        out,
        "--no-progress",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout if hasattr(r, "stdout") else r.output)
    runs = next((out / "sweeps").iterdir()) / "runs"
    seen = {}
    for c in doc["configs"]:
        n = c["settings"]["iterations"]
        for name in ("precise", "cumulative"):
            steps = []
            for seed in range(10):
                t = pd.read_csv(runs / f"iterations={n},seed={seed}" / "convergence.csv")
                e = t[t["estimator"] == name]
                worst = [max(g["mean_error"].max(), g["var_error"].max()) for _, g in e.groupby("iteration")]
                last_bad = max((i for i, w in enumerate(worst) if not w < 0.01), default=-1)
                steps.append(None if last_bad == n - 1 else last_bad + 2)
            reached = sorted(s for s in steps if s is not None)
            ranked = reached + [math.inf] * (10 - len(reached))
            median = (ranked[4] + ranked[5]) / 2  # ten seeds: the mean of the middle two
            got = c["summary"][f"median steps to 1%: {name}"]
            assert got == {"median": None if math.isinf(median) else median, "reached": len(reached), "of": 10}
            seen[n, name] = got
    assert seen[40, "precise"]["median"] is None  # none (or too few) got there in 40 steps
    assert 5 < seen[150, "precise"]["reached"] < 10  # some seeds did not: the median counts them
    table = cli("show", runs.parent)
    assert table.exit_code == 0 and f"({seen[150, 'precise']['reached']}/10)" in table.output
