"""bncli plot: PNGs from runs and sweeps, the plotted numbers, and clean errors."""

import numpy as np
import pandas as pd
import pytest
from helpers import sweep_file

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def small_sweep(cli, tmp_path):
    path = sweep_file(tmp_path, "p", base={"depth": 4, "width": 8, "batch_size": 4},
                      grid={"init": ["kaiming", "xavier"]}, seeds=[0, 1, 2])
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    return tmp_path / "out" / "sweeps" / "p"


def is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 5000


def test_plot_a_sweep_and_its_runs(cli, small_sweep, tmp_path):
    assert is_png(small_sweep / "std_by_layer.png")
    out = tmp_path / "abs.png"
    r = cli("plot", small_sweep, "--metric", "abs_max", "--out", out)
    assert r.exit_code == 0, r.output
    assert is_png(out) and f"plot: {out}" in " ".join(r.output.split())
    runs = sorted((small_sweep / "runs").iterdir())
    r = cli("plot", runs[0])
    assert r.exit_code == 0, r.output
    assert is_png(runs[0] / "std_by_layer.png")
    assert not list(tmp_path.rglob(".*.png"))  # no temporary file left behind


def test_the_lines_are_the_mean_over_seeds(small_sweep):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncli import plot
    from bncli.studies import depth

    study, table, stats = plot.load([small_sweep])
    fig = depth.draw(plt, table, "std")
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines if not ln.get_label().startswith("_")}
    assert set(lines) == {"init=kaiming", "init=xavier"}
    for init in ("kaiming", "xavier"):
        stds = np.stack([pd.read_csv(small_sweep / "runs" / f"init={init},seed={s}" / "layers.csv")["std"]
                         for s in (0, 1, 2)])
        np.testing.assert_allclose(lines[f"init={init}"].get_ydata(), stds.mean(axis=0), rtol=1e-12)
    assert fig.axes[0].get_yscale() == "linear"  # std stays near 0.58 with kaiming and xavier: no log
    plt.close(fig)


def test_running_stats_plot_and_metric_errors(cli, tmp_path, small_sweep):
    r = cli("running-stats", "--iterations", 3, "--name", "rs")
    assert r.exit_code == 0, r.output
    run = cli.out / "running-stats" / "rs"
    r = cli("plot", run, "--out", tmp_path / "rs.png")
    assert r.exit_code == 0, r.output
    assert is_png(tmp_path / "rs.png")

    r = cli("plot", small_sweep, "--metric", "stdd", "--out", tmp_path / "x.png")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "--metric" in r.output and "available: mean, std, abs_max, zero_fraction" in r.output
    assert not (tmp_path / "x.png").exists()
    r = cli("plot", small_sweep, run, "--out", tmp_path / "x.png")
    assert r.exit_code == 2 and "together" in r.output
    r = cli("plot", tmp_path / "nowhere")
    assert r.exit_code == 2 and "not a directory" in r.output
    r = cli("plot", small_sweep, "--out", tmp_path / "x.jpg")
    assert r.exit_code == 2 and ".png" in r.output
