"""bncli sweep without writing YAML: --study, --set, --grid and --seeds, alone or over a sweep file."""

import pytest
import yaml
from helpers import file_bytes, sweep_file

import bncli
from bncli import sweeps
from bncli.errors import BncliError

SMALL = ["--set", "depth=3", "--set", "width=8", "--set", "batch_size=4"]
FLAGS = [
    "--study",
    "depth-study",
    *SMALL,
    "--grid",
    "init=kaiming,xavier",
    "--grid",
    "norm=batchnorm,none",
    "--seeds",
    "0-1",
]
RESOLVED = {
    "study": "depth-study",
    "name": "depth-study-init-norm-a00000",  # the hash of its base, grid and seeds: below
    "base": {"depth": 3, "width": 8, "batch_size": 4},
    "grid": {"init": ["kaiming", "xavier"], "norm": ["batchnorm", "none"]},
    "seeds": [0, 1],
}
RESOLVED["name"] = sweeps.spec(study="depth-study", base=RESOLVED["base"], grid=RESOLVED["grid"], seeds=[0, 1]).data[
    "name"
]
NAME = RESOLVED["name"]
GRID_RUNS = [
    f"init={i},norm={n},seed={s}" for i in ("kaiming", "xavier") for n in ("batchnorm", "none") for s in (0, 1)
]


def sweep_cli(cli, *args):
    return cli("sweep", *args, "--no-progress")


def runs_of(d):
    return sorted(p.name for p in (d / "runs").iterdir())


def test_flags_alone_run_the_grid_times_seeds_and_save_the_resolved_sweep(cli, tmp_path):
    out = tmp_path / "out"
    r = sweep_cli(cli, *FLAGS, "--out", out)
    assert r.exit_code == 0, r.output
    d = out / "sweeps" / NAME
    assert runs_of(d) == sorted(GRID_RUNS)
    assert [p.name for p in sweeps.plan(d / "sweep.yaml", tmp_path / "x").points] == GRID_RUNS  # in grid order
    assert yaml.safe_load((d / "sweep.yaml").read_text()) == RESOLVED
    cfg = yaml.safe_load((d / "runs" / "init=xavier,norm=none,seed=1" / "config.yaml").read_text())
    assert (cfg["depth"], cfg["width"], cfg["batch_size"], cfg["init"], cfg["norm"], cfg["seed"]) == (
        3,
        8,
        4,
        "xavier",
        "none",
        1,
    )


def test_a_flag_sweep_equals_the_same_sweep_from_a_file_and_reruns_from_its_sweep_yaml(cli, tmp_path):
    flags, filed, rerun = tmp_path / "flags", tmp_path / "file", tmp_path / "rerun"
    assert sweep_cli(cli, *FLAGS, "--out", flags).exit_code == 0
    path = sweep_file(tmp_path, NAME, base=RESOLVED["base"], grid=RESOLVED["grid"], seeds=[0, 1])
    r = sweep_cli(cli, path, "--out", filed)
    assert r.exit_code == 0, r.output
    a, b = flags / "sweeps" / NAME, filed / "sweeps" / NAME
    fa, fb = file_bytes(a), file_bytes(b)
    assert yaml.safe_load(fa.pop("sweep.yaml")) == yaml.safe_load(fb.pop("sweep.yaml")) | {"name": a.name}
    assert fa == fb and len(fa) == 2 * 8 + 2  # layers.csv and config.yaml per run, summary and aggregate

    r = sweep_cli(cli, a / "sweep.yaml", "--out", rerun)  # sweep.yaml reruns exactly that sweep
    assert r.exit_code == 0, r.output
    assert file_bytes(rerun / "sweeps" / a.name) == file_bytes(a)


def test_flags_override_a_file(tmp_path):
    """--set overrides and adds base keys and takes its key off the grid; --grid replaces an axis
    in place (or adds one, taking its key out of base); --seeds replaces the seeds."""
    data = {
        "study": "depth-study",
        "name": "s",
        "base": {"depth": 3, "width": 16, "activation": "relu"},
        "grid": {"init": ["kaiming", "normal"], "norm": ["batchnorm", "none"], "bn_mode": ["train"]},
        "seeds": [0, 1],
    }
    path = tmp_path / "s.yaml"
    path.write_text("# a comment\n" + yaml.safe_dump(data, sort_keys=False))
    same = sweeps.spec(path, flags=True)
    assert same.data == data and same.text == path.read_text()  # no flag: the file as given
    sp = sweeps.spec(
        path,
        "depth-study",
        ["width=8", "norm=none", "batch_size=4"],
        ["activation=tanh,relu", "init=xavier"],
        "3",
        flags=True,
    )
    assert sp.data == {
        "study": "depth-study",
        "name": "s",
        "base": {"depth": 3, "width": 8, "norm": "none", "batch_size": 4},
        "grid": {"init": ["xavier"], "bn_mode": ["train"], "activation": ["tanh", "relu"]},
        "seeds": [3],
    }
    assert yaml.safe_load(sp.text) == sp.data
    assert sp.labels["base.width"] == "--set width" and sp.labels["base.depth"] == f"{path}: base.depth"
    assert sp.labels["grid.bn_mode"] == f"{path}: grid.bn_mode" and sp.labels["seeds"] == "--seeds"
    assert sweeps.spec(path, name="other", seeds=[5]).data["name"] == "other"
    plan = sweeps.plan(path, tmp_path / "out", base={"norm": "none"}, seeds=2)
    assert [p.name for p in plan.points] == ["init=kaiming,bn_mode=train,seed=2", "init=normal,bn_mode=train,seed=2"]
    assert not (tmp_path / "out").exists()


def test_values_read_as_yaml_and_seeds_as_ranges_lists_or_one():
    assert sweeps.parse_set(["depth=50", "init_std=1e-5", "momentum=none", "kernel=2,2", "x=null", "b=true"]) == {
        "depth": 50,
        "init_std": 1e-5,
        "momentum": "none",
        "kernel": "2,2",
        "x": None,
        "b": True,
    }
    assert type(sweeps.parse_set(["e=1e-5"])["e"]) is float
    assert sweeps.parse_set(["init-std=0.5"]) == {"init_std": 0.5}
    assert sweeps.parse_grid(["init=kaiming, xavier", "momentum=[[0.1, 0.3], [0.9]]", "d=3,1e2"]) == {
        "init": ["kaiming", "xavier"],
        "momentum": [[0.1, 0.3], [0.9]],
        "d": [3, 100.0],
    }
    assert sweeps.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweeps.parse_seeds("0,1,5") == [0, 1, 5]
    assert sweeps.parse_seeds("3") == [3] and sweeps.parse_seeds(3) == [3] and sweeps.parse_seeds("0-1,7") == [0, 1, 7]


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["give a sweep FILE or --study"]),
        (["--study", "depth"], ["--study: 'depth' is not a study", "depth-study, running-stats"]),
        (["--study", "depth-study", "--grid", "init=foo,kaiming"], ["--grid init:", "'foo'", "xavier"]),
        (["--study", "depth-study", "--set", "depth=x"], ["--set depth:", "integer", "'x'"]),
        (["--study", "depth-study", "--set", "depth=-2"], ["--set depth:", "greater than or equal to 1"]),
        (["--study", "depth-study", "--set", "nrom=none"], ["--set nrom: not a field of depth-study", "norm"]),
        (["--study", "depth-study", "--grid", "seed=1,2"], ["--grid seed:", "--seeds"]),
        (["--study", "depth-study", "--set", "init=xavier", "--grid", "init=kaiming"], ["--grid init:", "--set"]),
        (["--study", "depth-study", "--set", "depth=3", "--set", "depth=4"], ["--set depth: given twice"]),
        (["--study", "depth-study", "--set", "depth"], ["--set:", "KEY=VALUE"]),
        (["--study", "depth-study", "--grid", "init="], ["--grid init:", "give a value"]),
        (["--study", "depth-study", "--grid", "init=kaiming,,xavier"], ["--grid init:", "empty value"]),
        (["--study", "depth-study", "--grid", "init=[kaiming"], ["--grid init:", "not valid YAML"]),
        (["--study", "depth-study", "--grid", "init=kaiming,kaiming"], ["--grid init: each value once"]),
        (["--study", "depth-study", "--seeds", "4-0"], ["--seeds: 4-0", "goes up"]),
        (["--study", "depth-study", "--seeds", "a"], ["--seeds:", "0-4", "0,1,5", "'a'"]),
        (["--study", "depth-study", "--seeds", "-1"], ["--seeds:", "'-1'"]),
        (["--study", "depth-study", "--seeds", "0-999999"], ["--seeds:", "at most 100000"]),
        (["--study", "depth-study", "--seeds", "0,1,0"], ["--seeds: each seed once"]),
        (
            [
                "--study",
                "depth-study",
                "--grid",
                "width=1,2,3,4,5,6,7,8,9,10",
                "--grid",
                "depth=1,2,3,4,5,6,7,8,9,10",
                "--grid",
                "batch_size=2,3,4,5,6,7,8,9,10,11",
                "--seeds",
                "0-100",
            ],
            ["--grid/--seeds:", "101000 runs"],
        ),
        (
            ["--study", "depth-study", "--set", "batch_size=1", "--grid", "norm=batchnorm,none"],
            ["--set/--grid: run norm=batchnorm,seed=0:", "batch_size must be at least 2"],
        ),
        (["--study", "depth-study", "--name", "a/b"], ["--name:", "not a valid name"]),
        (["--study", "depth-study", "--name", ""], ["--name: '' is not a valid name"]),  # as a single run's
        (["--study", "depth-study", "--name", " "], ["--name: ' ' is not a valid name"]),
    ],
)
def test_bad_flags_fail_in_one_line_before_anything_is_made(cli, tmp_path, args, words):
    out = tmp_path / "out"
    r = sweep_cli(cli, *args, "--out", out)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, (w, r.output)
    assert r.output.startswith("Error: --") or not args, r.output  # the line names its flag
    assert not out.exists()


def test_flag_errors_over_a_file_name_the_flag_or_the_file(cli, tmp_path):
    path = sweep_file(tmp_path, study="running-stats", base={"iterations": 3}, grid={"momentum": [0.1, 0.2]})
    out = tmp_path / "out"
    for args, start in [
        (["--study", "depth-study"], "Error: --study: 'depth-study' differs from the study of"),
        (["--set", "iterations=x"], "Error: --set iterations: Input should be a valid integer"),
        (["--grid", "momentum=0.1,2"], "Error: --grid momentum: "),
        (["--set", "momentum=0.1", "--seeds", "0,0"], "Error: --seeds: each seed once"),
    ]:
        r = sweep_cli(cli, path, *args, "--out", out)
        assert r.exit_code == 2 and r.output.startswith(start), (args, r.output)
        assert len(r.output.strip().splitlines()) == 1
    path.write_text(path.read_text().replace("iterations: 3", "iterations: x"))
    r = sweep_cli(cli, path, "--seeds", "1", "--out", out)
    assert r.exit_code == 2 and r.output.startswith(f"Error: {path} + --seeds: run momentum=0.1,seed=1: "), r.output
    assert not out.exists()


def test_resume_of_a_flag_sweep_takes_the_same_flags_and_refuses_others(cli, tmp_path):
    out = tmp_path / "out"
    args = ["--study", "depth-study", *SMALL, "--grid", "init=kaiming,xavier", "--seeds", "0,1"]
    assert sweep_cli(cli, *args, "--out", out).exit_code == 0
    (d,) = (out / "sweeps").iterdir()
    assert d.name.startswith("depth-study-init-")
    before = file_bytes(d)
    r = sweep_cli(cli, *args, "--out", out)
    assert r.exit_code == 2 and "--resume" in r.output
    # the same sweep: base keys in another order, the seeds as a range
    same = [
        "--study",
        "depth-study",
        "--set",
        "batch_size=4",
        "--set",
        "width=8",
        "--set",
        "depth=3",
        "--grid",
        "init=kaiming,xavier",
        "--seeds",
        "0-1",
    ]
    r = sweep_cli(cli, *same, "--out", out, "--resume")
    assert r.exit_code == 0 and "resumed: 4 of 4 runs were already done" in r.output, r.output
    r = sweep_cli(cli, d / "sweep.yaml", "--out", out, "--resume")  # and from its sweep.yaml
    assert r.exit_code == 0 and "resumed: 4 of 4" in r.output, r.output
    common = ["--study", "depth-study", "--set", "width=8", "--set", "batch_size=4", "--grid", "init=kaiming,xavier"]
    for other, key in [
        (["--set", "depth=3", "--seeds", "0-2"], "seeds"),
        (["--set", "depth=4"], "base"),
        (["--set", "depth=3", "--set", "init_std=2.0"], "base"),
    ]:  # another sweep of the study: its own default name, never the first one's
        r = sweep_cli(cli, *common, *other, "--out", out, "--dry-run")
        assert r.exit_code == 0 and d.name not in r.output, r.output
        r = sweep_cli(cli, *common, *other, "--out", out, "--resume", "--name", d.name)  # named: refused
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert r.output.startswith(f"Error: --resume: {d / 'sweep.yaml'} differs from the sweep given (in {key}:")
    assert file_bytes(d) == before
    r = sweep_cli(cli, *args, "--grid", "norm=batchnorm,none", "--out", out, "--resume", "--name", d.name)
    assert r.exit_code == 2 and "(in grid:" in r.output


def test_resume_of_a_file_sweep_ignores_comments_but_not_settings(cli, tmp_path):
    path = sweep_file(tmp_path, base={"depth": 3, "width": 8, "batch_size": 4}, grid={"init": ["kaiming"]})
    out = tmp_path / "out"
    assert sweep_cli(cli, path, "--out", out).exit_code == 0
    path.write_text("# the same sweep, commented\n" + path.read_text())
    r = sweep_cli(cli, path, "--out", out, "--resume")
    assert r.exit_code == 0 and "resumed: 1 of 1" in r.output, r.output
    r = sweep_cli(cli, path, "--set", "width=16", "--out", out, "--resume")  # the file's name, another sweep
    assert r.exit_code == 2 and "differs from the sweep given (in base:" in r.output, r.output


def _refused_naming(r, d, run, *diffs):
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith(f"Error: --resume: run {run} in {d} was made with other settings"), r.output
    for diff in diffs:
        assert diff in r.output, (diff, r.output)


def test_resume_refuses_runs_made_with_other_settings_naming_them(cli, tmp_path):
    """Every way the runs on disk and the sweep resumed can part: the saved sweep.yaml edited (a
    base value, a grid value's meaning through the base), or deleted and resumed with other --set
    values, or one run's config.yaml not its point's. Each is refused, naming the difference, and
    nothing is written; the sweep as made still resumes."""
    out = tmp_path / "out"
    args = ["--study", "depth-study", *SMALL, "--grid", "init=kaiming,xavier", "--seeds", "0,1", "--name", "s"]
    assert sweep_cli(cli, *args, "--out", out).exit_code == 0
    d = out / "sweeps" / "s"
    saved = (d / "sweep.yaml").read_text()
    before = file_bytes(d)
    edited = tmp_path / "edited.yaml"
    edited.write_text(saved.replace("depth: 3", "depth: 25"))
    (d / "sweep.yaml").write_text(edited.read_text())  # the saved sweep.yaml edited in place, resumed from itself
    r = sweep_cli(cli, d / "sweep.yaml", "--out", out, "--resume")
    _refused_naming(r, d, "init=kaiming,seed=0", "depth: 3 there, 25 now")
    (d / "sweep.yaml").unlink()  # deleted, then resumed with other flags: nothing left to compare the sweep with
    other = [a.replace("depth=3", "depth=4") for a in args]
    r = sweep_cli(cli, *other, "--set", "init_std=2.0", "--out", out, "--resume")
    _refused_naming(r, d, "init=kaiming,seed=0", "depth: 3 there, 4 now", "init_std: 1.0 there, 2.0 now")
    assert file_bytes(d) == {k: v for k, v in before.items() if k != "sweep.yaml"}
    (d / "sweep.yaml").write_text(saved)
    one = d / "runs" / "init=xavier,seed=1" / "config.yaml"
    one.write_text(one.read_text().replace("seed: 1", "seed: 7"))  # one run not what its name says
    r = sweep_cli(cli, *args, "--out", out, "--resume")
    _refused_naming(r, d, "init=xavier,seed=1", "seed: 7 there, 1 now")
    one.write_text("study: depth-study\ndepth: [1\n")  # or not a config at all
    r = sweep_cli(cli, *args, "--out", out, "--resume")
    assert r.exit_code == 2 and "run init=xavier,seed=1's config.yaml cannot be read as a config" in r.output
    one.write_text(before["runs/init=xavier,seed=1/config.yaml"].decode())
    r = sweep_cli(cli, *args, "--out", out, "--resume")
    assert r.exit_code == 0 and "resumed: 4 of 4 runs were already done" in r.output, r.output
    (d / "runs" / "init=xavier,seed=1" / "config.yaml").unlink()  # a run without its config: not really there
    r = sweep_cli(cli, *args, "--out", out, "--resume")
    assert r.exit_code == 0 and "resumed: 3 of 4 runs were already done" in r.output, r.output
    assert file_bytes(d / "runs") == {k[5:]: v for k, v in before.items() if k.startswith("runs/") and "meta" not in k}


def test_without_a_grid_the_name_is_the_study_and_a_hash_and_the_runs_are_the_seeds(cli, tmp_path):
    out = tmp_path / "out"
    r = sweep_cli(cli, "--study", "running-stats", "--set", "iterations=2", "--seeds", "3", "--out", out)
    assert r.exit_code == 0, r.output
    (d,) = (out / "sweeps").iterdir()
    assert d.name.startswith("running-stats-") and runs_of(d) == ["seed=3"]
    assert yaml.safe_load((d / "sweep.yaml").read_text()) == {
        "study": "running-stats",
        "name": d.name,
        "base": {"iterations": 2},
        "grid": {},
        "seeds": [3],
    }


def test_the_api_takes_the_same_sweep_as_keyword_arguments(tmp_path):
    outcome = bncli.sweep(
        out=tmp_path / "api",
        study="depth-study",
        base={"depth": 3, "width": 8, "batch_size": 4},
        grid={"init": ["kaiming", "xavier"], "norm": ["batchnorm", "none"]},
        seeds="0-1",
        name=NAME,
    )
    assert outcome.total == 8 and outcome.failed == 0
    assert yaml.safe_load((outcome.dir / "sweep.yaml").read_text()) == RESOLVED
    for kw, start in [
        ({"grid": {"init": ["foo"]}}, "grid.init: 'foo' is not one of kaiming"),
        ({"grid": {"init": "kaiming"}}, "grid.init: Input should be a valid list"),
        ({"base": {"depth": "x"}}, "base.depth: Input should be a valid integer"),
        ({"seeds": []}, "seeds: give at least one seed"),
        ({"seeds": "x"}, "seeds: give a range like 0-4"),
        ({"base": {"depth": object()}}, "base: <object object"),
        ({"grid": {"depth": [3, 3.5]}}, "grid.depth: Input should be a valid integer"),
    ]:
        with pytest.raises(BncliError) as e:
            bncli.sweep(out=tmp_path / "bad", study="depth-study", **kw)
        assert str(e.value).startswith(start), str(e.value)
    from enum import Enum

    class Init(str, Enum):  # an enum of the caller's own: written as its value
        xavier = "xavier"

    plan = sweeps.plan(None, tmp_path / "enum", study="depth-study", grid={"init": [Init.xavier]})
    assert yaml.safe_load(plan.text)["grid"] == {"init": ["xavier"]}
    with pytest.raises(BncliError, match="give a sweep FILE or study"):
        bncli.sweep(out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_sweep_formats_and_quiet_for_scripts(cli, tmp_path):
    """--quiet prints the sweep directory alone; csv is summary.csv as written; json is strict,
    holds the same rows, and is what show prints."""
    import json

    import pandas as pd

    out = tmp_path / "out"
    args = [
        "sweep",
        "--study",
        "depth-study",
        "--set",
        "depth=3",
        "--set",
        "width=8",
        "--grid",
        "norm=batchnorm,none",
        "--out",
        out,
        "--no-progress",
    ]
    r = cli(*args, "--name", "q", "-q")
    assert r.exit_code == 0 and r.output == f"{out / 'sweeps' / 'q'}\n"
    r = cli(*args, "--name", "c", "--format", "csv")
    assert r.exit_code == 0 and r.output == (out / "sweeps" / "c" / "summary.csv").read_text()
    r = cli(*args, "--name", "j", "--format", "json")
    doc = json.loads(r.output)
    summary = pd.read_csv(out / "sweeps" / "j" / "summary.csv")
    assert doc["study"] == "depth-study" and doc["keys"] == ["norm"] and len(doc["rows"]) == len(summary)
    assert [row["std"] for row in doc["rows"]] == summary["std"].tolist()
    assert json.loads(cli("show", out / "sweeps" / "j", "--format", "json").output) == doc


def test_default_names_tell_sweeps_apart_and_find_the_same_one_again(cli, tmp_path):
    """Two flag-built sweeps of one study with other grids or --set values get two names (neither
    is refused as existing); the same flags, in another order, name the first one again."""
    out = tmp_path / "out"
    one = ["--study", "depth-study", *SMALL, "--grid", "init=kaiming,xavier"]
    assert sweep_cli(cli, *one, "--out", out).exit_code == 0
    for other in (
        ["--study", "depth-study", *SMALL, "--grid", "init=kaiming,normal"],
        ["--study", "depth-study", *SMALL, "--set", "init_std=2.0", "--grid", "init=kaiming,xavier"],
    ):
        r = sweep_cli(cli, *other, "--out", out)
        assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (out / "sweeps").iterdir())
    assert len(names) == 3 and all(n.startswith("depth-study-init-") for n in names)
    again = ["--grid", "init=kaiming,xavier", "--study", "depth-study", *reversed_pairs(SMALL)]
    r = sweep_cli(cli, *again, "--out", out, "--resume")
    assert r.exit_code == 0 and "resumed: 2 of 2 runs were already done" in r.output, r.output


def reversed_pairs(flags):
    pairs = [flags[i : i + 2] for i in range(0, len(flags), 2)]
    return [x for pair in reversed(pairs) for x in pair]


def test_a_grid_takes_hydras_range(cli, tmp_path):
    r = sweep_cli(
        cli, "--study", "depth-study", *SMALL[2:], "--grid", "depth=range(1,7,2)", "--out", tmp_path, "--dry-run"
    )
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1:] == [f"depth={d},seed=0" for d in (1, 3, 5)]  # stop left out, as Python's
    assert "3 runs (3 configs x 1 seed)" in r.output and not (tmp_path / "sweeps").exists()  # a dry run writes nothing
    path = sweep_file(tmp_path, "r", base={"width": 8, "batch_size": 4}, grid={"init_std": "range(0.5, 2, 0.5)"})
    plan = sweeps.plan(path, tmp_path)
    assert [p.values["init_std"] for p in plan.points] == [0.5, 1.0, 1.5]
    for bad, message in [
        ("range(5,1)", "a range of 0 values"),
        ("range(1,2,0)", "the step must be"),
        ("range(x)", "range takes numbers"),
    ]:
        r = sweep_cli(cli, "--study", "depth-study", "--grid", f"depth={bad}", "--out", tmp_path, "--dry-run")
        assert r.exit_code == 2 and r.output.startswith(f"Error: --grid depth: {bad}: {message}"), r.output


def test_an_empty_name_in_a_file_or_the_api_is_refused_as_for_a_single_run(cli, tmp_path):
    import bncli

    path = tmp_path / "s.yaml"
    path.write_text("study: depth-study\nname: ''\nbase: {depth: 2, width: 4, batch_size: 2}\n")
    r = sweep_cli(cli, path, "--out", tmp_path / "out")
    assert r.exit_code == 2 and r.output.startswith(f"Error: {path}: name: '' is not a valid name: "), r.output
    assert len(r.output.splitlines()) == 1
    for run in (
        lambda: bncli.sweep(study="depth-study", base={"depth": 2, "width": 4}, name="", out=tmp_path / "out"),
        lambda: bncli.depth_study(depth=2, width=4, name="", out=tmp_path / "out"),
    ):
        with pytest.raises(bncli.BncliError, match="^name: '' is not a valid name"):
            run()
    assert not (tmp_path / "out").exists()
