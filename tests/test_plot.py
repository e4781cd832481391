"""bncli plot: PNGs from runs and sweeps, the plotted numbers, and clean errors."""

import numpy as np
import pandas as pd
import pytest
from helpers import sweep_file, table_rows

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def small_sweep(cli, tmp_path):
    path = sweep_file(
        tmp_path,
        "p",
        base={"depth": 4, "width": 8, "batch_size": 4},
        grid={"init": ["kaiming", "xavier"]},
        seeds=[0, 1, 2],
    )
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
        stds = np.stack(
            [pd.read_csv(small_sweep / "runs" / f"init={init},seed={s}" / "layers.csv")["std"] for s in (0, 1, 2)]
        )
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


# -- which rows make a line, and what the legend calls it ------------------------------------------


def draw(paths, metric=None, **kw):
    """The figure `bncli plot` would write, for inspection: (figure, table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncli import plot, studies

    study, table, opts = plot.prepare(paths, metric, **kw)
    return studies.get(study).draw(plt, table, metric, opts), table


def labelled(ax):
    return {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}


def legend_labels(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def title_of(fig):
    return fig._suptitle.get_text() if fig._suptitle is not None else fig.axes[0].get_title()


@pytest.fixture
def two_sweeps(cli, tmp_path):
    """The same grid at depth 4 and depth 6, two seeds each."""
    dirs = []
    for name, depth in (("shallow", 4), ("deep", 6)):
        path = sweep_file(
            tmp_path,
            name,
            base={"depth": depth, "width": 8, "batch_size": 4},
            grid={"init": ["kaiming", "xavier"]},
            seeds=[0, 1],
        )
        r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
        assert r.exit_code == 0, r.output
        dirs.append(tmp_path / "out" / "sweeps" / name)
    return dirs


def test_lines_from_two_sweeps_never_merge(cli, two_sweeps, tmp_path):
    import matplotlib.pyplot as plt

    fig, _ = draw(two_sweeps, "std")
    lines = labelled(fig.axes[0])
    assert sorted(lines) == [
        "deep (depth=6): init=kaiming",
        "deep (depth=6): init=xavier",
        "shallow (depth=4): init=kaiming",
        "shallow (depth=4): init=xavier",
    ]
    for label, ln in lines.items():
        sweep, depth = ("deep", 6) if label.startswith("deep") else ("shallow", 4)
        init = label.rsplit("=", 1)[1]
        assert list(ln.get_xdata()) == list(range(depth))  # no depth-6 layer in a depth-4 line
        runs = tmp_path / "out" / "sweeps" / sweep / "runs"
        stds = [pd.read_csv(runs / f"init={init},seed={s}" / "layers.csv")["std"] for s in (0, 1)]
        np.testing.assert_allclose(ln.get_ydata(), np.mean(stds, axis=0), rtol=1e-12)
    # the same config in the two sweeps: one colour, a line style per sweep
    kaiming = [ln for label, ln in lines.items() if label.endswith("kaiming")]
    assert kaiming[0].get_color() == kaiming[1].get_color()
    assert kaiming[0].get_linestyle() != kaiming[1].get_linestyle()
    assert "over 2 seeds" in title_of(fig)
    plt.close(fig)
    r = cli("plot", *two_sweeps, "--out", tmp_path / "two.png")
    assert r.exit_code == 0 and is_png(tmp_path / "two.png"), r.output


def test_single_runs_are_seeds_of_one_line_only_when_they_differ_by_seed_alone(cli, tmp_path):
    import matplotlib.pyplot as plt

    args = ["depth-study", "--depth", 4, "--width", 8, "--batch-size", 4, "--quiet"]
    for name, extra in (
        ("a", ["--seed", 0]),
        ("b", ["--seed", 0]),
        ("c", ["--seed", 1]),
        ("d", ["--seed", 0, "--init", "xavier"]),
    ):
        assert cli(*args, "--name", name, *extra).exit_code == 0
    run = {n: cli.out / "depth-study" / n for n in "abcd"}

    fig, table = draw([run["a"], run["c"]])  # seeds 0 and 1 of one config: one line, its mean
    assert list(labelled(fig.axes[0])) == ["init=kaiming, norm=batchnorm, activation=relu"]
    assert "over 2 seeds" in title_of(fig)
    fig, _ = draw([run["a"], run["b"]])  # the same settings and seed: two runs, not two seeds
    assert sorted(labelled(fig.axes[0])) == ["a", "b"] and "one seed" in title_of(fig)
    fig, _ = draw([run["a"], run["c"], run["d"]])
    assert sorted(labelled(fig.axes[0])) == ["init=kaiming", "init=xavier"]
    fig, _ = draw([run[n] for n in "abcd"])  # seed 0 twice among a, b, c: a line each
    assert sorted(labelled(fig.axes[0])) == ["init=kaiming (a)", "init=kaiming (b)", "init=kaiming (c)", "init=xavier"]
    plt.close("all")


# -- --where, --facet, --logy/--linear, --title, the format ---------------------------------------


@pytest.fixture
def mixed_sweep(cli, tmp_path):
    """init_vs_norm in small: normal init at std 10 explodes without a norm (about 13 decades in
    10 layers), BatchNorm holds it near 0.58."""
    path = sweep_file(
        tmp_path,
        "mixed",
        base={"depth": 10, "width": 8, "batch_size": 4, "init_std": 10.0},
        grid={"init": ["kaiming", "normal"], "norm": ["batchnorm", "layernorm", "none"]},
        seeds=[0, 1],
    )
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    return tmp_path / "out" / "sweeps" / "mixed"


def test_a_sweep_mixing_diverging_and_stable_configs_gets_a_panel_per_norm(mixed_sweep, small_sweep):
    import matplotlib.pyplot as plt

    fig, _ = draw([mixed_sweep])  # what the sweep itself draws
    assert [ax.get_title() for ax in fig.axes] == ["norm=batchnorm", "norm=layernorm", "norm=none"]
    bn, _, none = fig.axes
    assert bn.get_yscale() == "linear" and none.get_yscale() == "log"  # each panel its own scale
    assert bn.get_ylim()[1] < 1 and none.get_ylim()[1] > 1e10  # the stable lines fill their axis
    assert sorted(labelled(bn)) == sorted(labelled(none)) == ["init=kaiming", "init=normal"]
    ln = fig.axes[1]  # BatchNorm's and LayerNorm's std compare on one axis; the explosion has its own
    assert bn.get_shared_y_axes().joined(bn, ln) and bn.get_ylim() == ln.get_ylim()
    assert not bn.get_shared_y_axes().joined(bn, none)
    assert legend_labels(fig)[:2] == ["init=kaiming", "init=normal"]  # one legend, each config once
    assert labelled(bn)["init=normal"].get_color() == labelled(none)["init=normal"].get_color()
    fig, _ = draw([mixed_sweep], facet="none")
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "log" and len(labelled(fig.axes[0])) == 6
    fig, _ = draw([small_sweep])  # nothing diverges: one panel, as before
    assert len(fig.axes) == 1
    plt.close("all")


def test_panels_share_an_axis_only_where_each_fills_a_third_of_it():
    from bncli.studies.depth import plots

    bn, ln, big = np.array([0.55, 0.6]), np.array([0.5, 0.65]), np.array([50.0, 60.0])
    assert plots.shared([bn, big, ln], [False, False, False]) == [[0, 2], [1]]  # 0.6 on an axis to 60: flat
    assert plots.shared([bn, ln], [False, True]) == [[0], [1]]  # a log and a linear axis never share
    wide, flat = np.array([1e-40, 1.0]), np.array([0.5, 2.0])  # 40 decades; 0.6 of one
    assert plots.shared([wide, np.array([1.0, 1e30]), flat], [True] * 3) == [[0, 1], [2]]


@pytest.fixture
def depths_sweep(cli, tmp_path):
    """One config at depths 2, 4 and 8, the same seeds: the shallower runs are the deeper's first layers."""
    path = sweep_file(tmp_path, "d", base={"width": 8, "batch_size": 4}, grid={"depth": [2, 4, 8]}, seeds=[0, 1])
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    return tmp_path / "out" / "sweeps" / "d"


def overlap_note(ax):
    notes = [a for a in ax.get_children() if a.get_gid() == "overlaps"]
    return notes[0].get_title().get_text() if notes else ""


def test_a_shorter_line_under_a_longer_one_is_noted(depths_sweep, small_sweep):
    import matplotlib.pyplot as plt

    from bncli import figures

    fig, _ = draw([depths_sweep])
    ax = fig.axes[0]
    lines = labelled(ax)
    assert sorted(lines) == ["depth=2", "depth=4", "depth=8"] and len(fig.axes) == 1
    deep = lines["depth=8"].get_ydata()
    for d in (2, 4):  # what the note claims: each is depth 8's first layers, to the last digit
        np.testing.assert_array_equal(lines[f"depth={d}"].get_ydata(), deep[:d])
    assert figures.overlaps(ax) == ["depth=2 and depth=4 = part of depth=8"]
    assert overlap_note(ax) == "on top of each other:\ndepth=2 and depth=4 = part of depth=8"
    fig, _ = draw([small_sweep])  # kaiming and xavier differ: no note
    assert figures.overlaps(fig.axes[0]) == [] and overlap_note(fig.axes[0]) == ""
    plt.close("all")


def test_lines_the_same_everywhere_and_at_the_start_are_noted_once():
    """LayerNorm makes every init's output the same: two full lines equal, and the shorter ones
    equal to part of them are said once, with the group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncli import figures

    fig, ax = plt.subplots()
    y = np.array([1.0, 0.5, 0.25, 0.125])
    ax.plot(range(4), y, label="init=kaiming")
    ax.plot(range(4), y * (1 + 1e-6), label="init=xavier")  # within 0.01%
    ax.plot(range(2), y[:2], label="depth=2")
    ax.plot([1, 2], y[1:3], label="from layer 1")  # not only the start
    ax.plot(range(3), [1.0, 0.5, 0.3], label="apart")  # on it for two layers, then not: visible
    ax.plot(range(4), y[::-1], label="_band")  # unlabelled artists are not lines of the legend
    ax.plot([2, 3], y[2:], label="end 1")
    ax.plot([2, 3], y[2:], label="end 2")  # two equal short lines: one group, said once, on the long one
    assert figures.overlaps(ax) == ["depth=2 and from layer 1 and end 1 = end 2 = part of init=kaiming = init=xavier"]
    plt.close(fig)
    fig, ax = plt.subplots()  # the settings all the lines share are said once, in front
    for pos, res, n in (("pre", 1, 4), ("post", 1, 4), ("pre", 0, 3), ("post", 0, 4), ("pre", 0, 4)):
        ax.plot(range(n), y[:n] * (1 + res), label=f"norm_position={pos}, norm=none, residual={res}, n={n}")
    assert figures.overlaps(ax) == [
        "norm=none, residual=1, n=4: norm_position=pre = norm_position=post",
        "norm=none, residual=0: norm_position=pre, n=3 = part of norm_position=post, n=4 = norm_position=pre, n=4",
    ]
    plt.close(fig)


def test_the_residual_stream_panels_note_hidden_lines_and_share_comparable_axes(cli, tmp_path):
    """Without a norm, pre- and post-LN are one network: their lines coincide in every panel."""
    import matplotlib.pyplot as plt

    from bncli import figures

    path = sweep_file(
        tmp_path,
        "tr",
        base={"arch": "transformer", "depth": 3, "width": 8, "tokens": 4, "heads": 2, "batch_size": 2},
        grid={"norm_position": ["pre", "post"], "norm": ["layernorm", "none"]},
    )
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    fig, _ = draw([tmp_path / "out" / "sweeps" / "tr"])
    assert [ax.get_title() for ax in fig.axes] == ["std", "token_cos"]
    for ax in fig.axes:
        same = "norm=none: norm_position=pre = norm_position=post"  # what they share, said once
        assert figures.overlaps(ax) == [same] and overlap_note(ax).endswith(same)
        lines = labelled(ax)
        np.testing.assert_array_equal(*(lines[f"norm_position={p}, norm=none"].get_ydata() for p in ("pre", "post")))
    fig, table = draw([tmp_path / "out" / "sweeps" / "tr"], facet="norm")  # a row per norm
    std_ln, cos_ln, std_none, cos_none = fig.axes
    assert cos_ln.get_shared_y_axes().joined(cos_ln, cos_none)  # token_cos is a cosine in either
    grown = (
        table[table["setting:norm"] == "none"]["std"].max() / table[table["setting:norm"] == "layernorm"]["std"].max()
    )
    assert grown > 3 and not std_ln.get_shared_y_axes().joined(std_ln, std_none)  # LayerNorm's would be flat
    plt.close("all")


def test_auto_facets_give_no_panel_of_one_line_and_split_a_crowd(cli, tmp_path, mixed_sweep):
    import matplotlib.pyplot as plt

    # the README's example: no norm, four inits, one holding: one panel, not one per init
    fig, _ = draw([mixed_sweep], where=["norm=none"], metric="abs_max")
    assert len(fig.axes) == 1 and len(labelled(fig.axes[0])) == 2
    fig, _ = draw([mixed_sweep], where=["init=normal"])  # two norms hold, none explodes: a panel per
    assert len(fig.axes) == 1 and len(labelled(fig.axes[0])) == 3  # norm would hold one line each
    path = sweep_file(
        tmp_path,
        "crowd",
        base={"depth": 3, "width": 8, "batch_size": 4},
        grid={"init": ["kaiming", "xavier", "normal", "default"], "norm": ["batchnorm", "rmsnorm"]},
    )
    r = cli("sweep", path, "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output
    fig, _ = draw([tmp_path / "out" / "sweeps" / "crowd"])  # 8 stable lines: a panel per norm of 4
    assert [ax.get_title() for ax in fig.axes] == ["norm=batchnorm", "norm=rmsnorm"]
    assert [len(labelled(ax)) for ax in fig.axes] == [4, 4]
    a, b = fig.axes
    assert a.get_shared_y_axes().joined(a, b) and a.get_ylim() == b.get_ylim()
    fig, _ = draw([tmp_path / "out" / "sweeps" / "crowd"], where=["norm=batchnorm"])  # 4 lines: one panel
    assert len(fig.axes) == 1
    plt.close("all")


def test_theory_std_dashed_over_each_line(cli, small_sweep, mixed_sweep, tmp_path):
    import matplotlib.pyplot as plt

    from bncli import figures

    for paths, kw in (([small_sweep], {}), ([mixed_sweep], {"metric": "std"})):
        fig, table = draw(paths, theory=True, **kw)
        for ax in fig.axes:
            theory = [ln for ln in ax.lines if ln.get_gid() == "theory_std"]
            assert len(theory) == len(labelled(ax)) > 0
            for ln, dashed in zip(labelled(ax).values(), theory, strict=True):  # drawn right after its line
                assert dashed.get_color() == figures.darker(ln.get_color()) and dashed.get_linestyle() == "--"
                rows = table[table["label"] == ln.get_label()]
                if len(fig.axes) > 1:  # a panel per norm
                    rows = rows[rows["setting:norm"] == ax.get_title().removeprefix("norm=")]
                by_layer = rows.groupby("layer")["theory_std"]
                assert (by_layer.nunique() == 1).all()  # the same for every seed: the mean is it
                np.testing.assert_allclose(dashed.get_ydata(), by_layer.first().to_numpy(), rtol=1e-12)
        assert "dashed: theory_std, each line's theory (darker)" in legend_labels(fig)
    fig, _ = draw([small_sweep])
    assert not [ln for ln in fig.axes[0].lines if ln.get_gid()]  # only when asked
    plt.close("all")
    r = cli("plot", small_sweep, "--theory", "--out", tmp_path / "t.png")
    assert r.exit_code == 0 and is_png(tmp_path / "t.png"), r.output
    for args, words in (
        (["--metric", "abs_max"], ["--theory", "no column theory_abs_max", "the metrics with one: std"]),
        ([], ["--theory", "no theory column"]),
    ):
        if not args:
            assert cli("running-stats", "--iterations", 3, "--name", "rs").exit_code == 0
        path = small_sweep if args else cli.out / "running-stats" / "rs"
        r = cli("plot", path, "--theory", *args, "--out", tmp_path / "x.png")
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert all(w in r.output for w in words), r.output
        assert not (tmp_path / "x.png").exists()


def test_a_band_on_a_log_axis_has_no_holes(mixed_sweep):
    """mean - sd <= 0 cannot sit on a log axis: the lower edge mirrors the upper one in log
    space, mean^2 / (mean + sd), so the band is whole and still holds the mean."""
    import matplotlib.pyplot as plt

    fig, table = draw([mixed_sweep], logy=True, facet="none")
    ax = fig.axes[0]
    for band in ax.collections:
        if len(band.get_paths()) and band.get_paths()[0].vertices.shape[0] > 2:
            y = band.get_paths()[0].vertices[:, 1]
            assert np.isfinite(y).all() and (y > 0).all()
    line = labelled(ax)["init=kaiming, norm=none"]
    kaiming = table[(table["init"] == "kaiming") & (table["norm"] == "none")].groupby("layer")["std"]
    mean, sd = kaiming.mean().to_numpy(), kaiming.std().to_numpy()
    np.testing.assert_allclose(line.get_ydata(), mean)
    edges = [band.get_paths()[0].vertices[:, 1] for band in ax.collections if band.get_paths()]
    assert any(all(np.isclose(y, v, rtol=1e-6).any() for v in mean * mean / (mean + sd)) for y in edges)
    plt.close("all")


def test_where_facet_scale_and_title(mixed_sweep):
    import matplotlib.pyplot as plt

    fig, table = draw([mixed_sweep], where=["norm=none"], facet="none")
    assert set(table["setting:norm"]) == {"none"} and len(fig.axes) == 1
    assert sorted(labelled(fig.axes[0])) == ["init=kaiming", "init=normal"]  # norm: the same for all
    assert title_of(fig).endswith("; norm=none")
    fig, _ = draw([mixed_sweep], where=["norm=none"])  # kaiming holds, normal explodes: a panel of one
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "log"  # line each would compare nothing
    assert sorted(labelled(fig.axes[0])) == ["init=kaiming", "init=normal"]
    fig, _ = draw([mixed_sweep], where=["norm=none", "norm=batchnorm", "init=kaiming"])  # a key twice: either
    assert sorted(labelled(fig.axes[0])) == ["norm=batchnorm", "norm=none"]
    fig, _ = draw([mixed_sweep], facet="init", logy=True, title="all of it")
    assert [ax.get_title() for ax in fig.axes] == ["init=kaiming", "init=normal"]
    assert {ax.get_yscale() for ax in fig.axes} == {"log"} and title_of(fig) == "all of it"
    fig, _ = draw([mixed_sweep], facet="norm", logy=False, metric="abs_max")
    assert {ax.get_yscale() for ax in fig.axes} == {"linear"} and fig.axes[0].get_ylabel() == "abs_max"
    plt.close("all")


def test_svg_and_pdf_by_the_extension(cli, small_sweep, tmp_path):
    r = cli("plot", small_sweep, "--out", tmp_path / "p.svg", "--title", "kaiming & xavier")
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "p.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "kaiming &amp; xavier" in svg
    r = cli("plot", small_sweep, "--out", tmp_path / "p.PDF", "--where", "init=kaiming", "--linear")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.PDF").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--out", "x.jpg"], ["--out", ".png, .svg, .pdf"]),
        (["--where", "inits=kaiming"], ["--where", "'inits'", "available: depth, width", "init,"]),
        (["--where", "init=he"], ["--where", "init: 'he' is not one of kaiming,"]),  # as bncli runs refuses it
        (["--where", "init=normal"], ["--where", "no run has init=normal; init is one of: kaiming, xavier"]),
        (["--where", "init"], ["--where", "KEY=VALUE"]),
        (["--facet", "nrom"], ["--facet", "'nrom'", "available: none, depth", "norm"]),
        (["--title", "$x^$", "--mathtext"], ["--title: '$x^$' is not valid mathtext: end of text at character 3"]),
        (["--title", "$\\fra{1}{2}$", "--mathtext"], ["--title: ", "is not valid mathtext", "leave out --mathtext"]),
        (["--title", "a\tb"], ["--title: 'a\\tb' holds '\\t', which cannot be drawn"]),
        (["--title", "a\x1b[31m"], ["--title: ", "holds '\\x1b', which cannot be drawn"]),
    ],
)
def test_bad_plot_options_are_one_line_and_write_nothing(cli, small_sweep, tmp_path, args, words):
    args = [a if a != "x.jpg" else tmp_path / a for a in args]
    before = sorted(tmp_path.rglob("*"))
    r = cli("plot", small_sweep, *args, *([] if "--out" in args else ["--out", tmp_path / "x.png"]))
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith("Error: ") and all(w in r.output for w in words), r.output
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("title", ["costs $5 and $10", "$x^$", "$x^2$", "a $ sign", "$\\alpha$ & $"])
def test_a_title_is_plain_text_every_dollar_kept(cli, small_sweep, tmp_path, title):
    """matplotlib reads $...$ as math by default: `$x^$` failed to draw, `$5 and $10` lost its $."""
    r = cli("plot", small_sweep, "--out", tmp_path / "t.png", "--title", title)
    assert r.exit_code == 0 and is_png(tmp_path / "t.png"), r.output
    fig, _ = draw([small_sweep], title=title)
    text = fig._suptitle or fig.axes[0].title
    assert text.get_text() == title and text._preprocess_math(title) == (title, False)  # not math


def test_mathtext_is_read_only_when_asked(cli, small_sweep, tmp_path):
    r = cli("plot", small_sweep, "--out", tmp_path / "t.png", "--title", "$x^2$ grows", "--mathtext")
    assert r.exit_code == 0 and is_png(tmp_path / "t.png"), r.output
    fig, _ = draw([small_sweep], title="$x^2$ grows", mathtext=True)
    text = fig._suptitle or fig.axes[0].title
    assert text._preprocess_math("$x^2$ grows") == ("$x^2$ grows", True)
    import bncli

    with pytest.raises(bncli.BncliError, match=r"^--title: 'a\\udcff' holds '\\udcff', which cannot be drawn"):
        bncli.plot_runs([small_sweep], tmp_path / "u.png", title="a\udcff")  # a byte no encoding had
    assert not (tmp_path / "u.png").exists()


# -- running stats and convergence ----------------------------------------------------------------


def test_running_stats_a_colour_per_channel_and_the_formula_dashed_in_it(cli):
    import matplotlib.pyplot as plt

    for m in ("0.1", "0.9"):
        assert cli("running-stats", "--iterations", 4, "--momentum", m, "--name", f"m{m}").exit_code == 0
    runs = [cli.out / "running-stats" / f"m{m}" for m in ("0.1", "0.9")]
    fig, table = draw(runs)
    assert [ax.get_title() for ax in fig.axes] == [
        "running_mean: momentum=0.1",
        "running_var: momentum=0.1",
        "running_mean: momentum=0.9",
        "running_var: momentum=0.9",
    ]
    ax = fig.axes[0]
    measured = [ln for ln in ax.lines if ln.get_linestyle() == "None"]
    formula = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(measured) == len(formula) == 5  # the notebook's five channels
    assert len({ln.get_color() for ln in measured}) == 5
    assert [ln.get_color() for ln in measured] == [ln.get_color() for ln in formula]
    ch = table[(table["channel"] == 4) & (table["setting:momentum"] == "0.1")]
    np.testing.assert_allclose(measured[4].get_ydata(), ch["running_mean"])
    np.testing.assert_allclose(formula[4].get_ydata(), ch["expected_mean"])
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert legend_labels(fig)[:5] == [f"channel {c}" for c in range(5)]
    plt.close("all")


def test_the_convergence_plot_shows_the_worst_channel_like_its_table(cli):
    import matplotlib.pyplot as plt

    r = cli("convergence", "--iterations", 30, "--batch-size", 4, "--num-features", 3, "--name", "c")
    assert r.exit_code == 0, r.output
    fig, table = draw([cli.out / "convergence" / "c"])
    assert "worst channel" in title_of(fig) and "worst channel" in fig.axes[0].get_ylabel()
    line = labelled(fig.axes[0])["precise"]  # one config: its settings in the title, not in every label
    assert "batch_size=4" in title_of(fig)
    worst = table[table["estimator"] == "precise"].groupby("iteration")["mean_error"].max()
    np.testing.assert_allclose(line.get_ydata(), worst.to_numpy())
    row = next(cells for cells in table_rows(r.output) if cells[0] == "precise")  # estimator, steps, mean_error
    assert worst.to_numpy()[-1] == pytest.approx(float(row[2]), rel=1e-3)
    plt.close("all")
