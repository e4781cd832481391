"""Reading saved results back: files that are not regular, damaged or non-finite metadata, alias
bombs, `bncli runs --where` on resolved and typed settings, the listing's cost and its columns."""

import contextlib
import json
import os
import signal
import time

import pytest
from helpers import sweep_file

from bncli import results


class Hung(BaseException):
    """Not an OSError (TimeoutError is one, which a reader may catch as an unreadable file)."""


@contextlib.contextmanager
def deadline(seconds=10):
    """A test that would hang (a FIFO opened for reading waits for a writer) fails instead:
    SIGALRM interrupts the blocked system call and raises here."""

    def expired(signum, frame):
        raise Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_line(r, code=None):
    """A refusal: one line `Error: ...`, no traceback (exit `code` when given)."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert code is None or r.exit_code == code, r.output
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return lines[0]


def tiny(cli, name, *args):
    r = cli("depth-study", "--depth", 3, "--width", 4, "--batch-size", 4, "--device", "cpu", "--name", name, *args)
    assert r.exit_code == 0, r.output
    return cli.out / "depth-study" / name


def listed(cli, *args):
    r = cli("runs", cli.out, "--format", "json", *args)
    assert r.exit_code == 0, r.output
    return {e["name"]: e for e in json.loads(r.output)}


def hostile(path, kind):
    """Replace file `path` with a FIFO, or a symlink to /dev/zero."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


# -- 24.1: every file read back is a regular file, read with a bound --------------------------------


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("file", ["layers.csv", "meta.json", "config.yaml"])
def test_a_run_file_that_is_not_regular_is_damaged_never_waited_on(cli, tmp_path, file, kind):
    good, bad = tiny(cli, "good"), tiny(cli, "bad")
    hostile(bad / file, kind)
    with deadline():
        entries = listed(cli)
        assert entries["depth-study/bad"]["status"] == "damaged"
        assert entries["depth-study/good"]["status"] == "ok"  # the rest list
        for args in (["show", bad], ["show", bad, "--format", "json"], ["compare", good, bad]):
            line = one_line(cli(*args))
            assert "bad" in line and (file in line or "not a regular file" in line), line
        line = one_line(cli("plot", good, bad, "--out", tmp_path / "p.png"))
        assert "not a regular file" in line or file in line


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("file", ["layers.csv", "meta.json", "sweep.yaml", "summary.csv"])
def test_sweep_files_that_are_not_regular_end_in_one_line(cli, tmp_path, file, kind):
    spec = sweep_file(tmp_path, base={"depth": 3, "width": 4, "batch_size": 4, "device": "cpu"}, grid={"depth": [2, 3]})
    assert cli("sweep", spec, "--out", cli.out, "--no-progress").exit_code == 0
    d = cli.out / "sweeps" / "s"
    target = d / file if file in ("sweep.yaml", "summary.csv") else next((d / "runs").iterdir()) / file
    hostile(target, kind)
    with deadline():
        entries = listed(cli)
        assert "damaged" in entries["sweeps/s"]["status"], entries
        # each ends: show and plot read summary.csv (not a run's files), resume redoes a damaged
        # run; what cannot be read is refused in one line
        for args in (["show", d], ["plot", d, "--out", tmp_path / "p.png"], ["sweep", spec, "--resume"]):
            r = cli(*args, "--out", cli.out, "--no-progress") if args[0] == "sweep" else cli(*args)
            assert r.exit_code == 0 or one_line(r), r.output
        if file in ("summary.csv", "sweep.yaml") and not (d / file).is_file():  # what show reads of a sweep
            assert "not a regular file" in one_line(cli("show", d))


def test_a_file_over_its_bound_is_refused_not_read(cli, monkeypatch):
    run = tiny(cli, "big")
    monkeypatch.setattr(results, "MAX_TABLE", 64)  # layers.csv is a few hundred bytes
    line = one_line(cli("show", run), 2)
    assert "layers.csv is over" in line and "damaged" in line


# -- 24.4 and 24.6: damaged and non-finite metadata ----------------------------------------------------


@pytest.mark.parametrize(
    "key, value", [("started_at", 12345), ("wall_seconds", "abc"), ("status", 7), ("study", None), ("seed", "x")]
)
def test_one_damaged_meta_is_listed_as_damaged_and_the_rest_list(cli, key, value):
    tiny(cli, "good")
    bad = tiny(cli, "bad")
    meta = json.loads((bad / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, key: value}))
    for fmt in ("table", "csv", "json"):
        r = cli("runs", cli.out, "--format", fmt)
        assert r.exit_code == 0 and r.exception is None, r.output
    entries = listed(cli)
    assert entries["depth-study/bad"]["status"] == "damaged" and entries["depth-study/good"]["status"] == "ok"
    r = cli("show", cli.out)  # a results directory: its listing, the damaged run on its own line
    assert r.exit_code == 0 and [ln for ln in r.output.splitlines() if "bad" in ln][0].split()[3] == "damaged"
    assert "damaged" in one_line(cli("show", bad), 2)
    assert list(listed(cli, "--status", "damaged")) == ["depth-study/bad"]


def test_non_finite_metadata_gives_strict_json_and_one_verdict(cli):
    a, b = tiny(cli, "a"), tiny(cli, "b")
    (a / "meta.json").write_text(
        (a / "meta.json").read_text().replace('"wall_seconds": ', '"wall_seconds": NaN, "x": ')
    )
    text = (a / "config.yaml").read_text()
    assert "init_std: 1.0" in text
    (a / "config.yaml").write_text(text.replace("init_std: 1.0", "init_std: .nan").replace("depth: 3", "depth: .inf"))

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))

    entry = {e["name"]: e for e in strict(cli("runs", cli.out, "--format", "json").output)}["depth-study/a"]
    assert entry["wall_seconds"] is None and entry["settings"]["init_std"] is None and entry["status"] == "ok"
    shown = cli("show", a)
    doc = cli("show", a, "--format", "json")
    assert shown.exit_code == doc.exit_code == 0, (shown.output, doc.output)  # one verdict: shown, both ways
    assert strict(doc.output)["settings"]["init_std"] is None and "init_std=nan" in shown.output
    cmp = strict(cli("compare", a, b, "--format", "json").output)
    assert cmp["settings"]["init_std"] == [None, 1.0]


# -- 24.8: YAML alias bombs ---------------------------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)  # about 350 bytes, 10^9 values


def test_an_alias_bomb_is_refused_while_parsing_wherever_yaml_is_read(cli, tmp_path):
    from bncli import config

    assert len(LAUGHS) < 400
    start = time.perf_counter()
    with pytest.raises(results.BncliError, match="aliases expand it by over"):
        config.loads(LAUGHS, "--config", "f")
    assert time.perf_counter() - start < 0.5  # a structural bound, not a benchmark: it counts ~100 nodes
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS + "depth: *i\n")
    assert "aliases expand" in one_line(cli("depth-study", "--config", bomb), 2)
    (tmp_path / "sweep.yaml").write_text("study: depth-study\n" + LAUGHS + "grid: {depth: *i}\n")
    assert "aliases expand" in one_line(cli("sweep", tmp_path / "sweep.yaml", "--out", cli.out), 2)
    run = tiny(cli, "r")
    (run / "config.yaml").write_text(LAUGHS + (run / "config.yaml").read_text())
    spec = sweep_file(tmp_path, base={"depth": 2, "width": 4, "batch_size": 4, "device": "cpu"}, grid={"depth": [2]})
    assert cli("sweep", spec, "--out", cli.out, "--no-progress").exit_code == 0
    saved = cli.out / "sweeps" / "s" / "sweep.yaml"
    saved.write_text(LAUGHS + saved.read_text())
    entries = listed(cli)
    assert entries["depth-study/r"]["status"] == entries["sweeps/s"]["status"] == "damaged"
    assert "aliases expand" in one_line(cli("show", run), 2)
    assert "aliases expand" in one_line(cli("sweep", saved, "--out", cli.out, "--resume"), 2)


@pytest.mark.parametrize("text", ["&a [*a]\n", "a: &a {b: *a}\n", "a: &a [1, [2, *a]]\n"])
def test_a_recursive_alias_is_refused(text):
    from bncli import config

    with pytest.raises(results.BncliError, match="recursive"):
        config.loads(text, "--config", "f")


def test_aliases_within_the_bound_still_read():
    from bncli import config

    assert config.loads("a: &a [1, 2]\nb: *a\n", "--config", "f") == {"a": [1, 2], "b": [1, 2]}
    wide = "a: &a [" + ", ".join(["1"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 9) + "]\n"  # 9000 added: under
    assert len(config.loads(wide, "--config", "f")["b"]) == 9


# -- 24.3 and 23.14: --where on resolved, typed settings; typos refused ---------------------------------


def names(entries):
    return sorted(e["name"] for e in entries)


def test_where_compares_resolved_typed_settings(cli, tmp_path):
    import bncli

    tiny(cli, "plain")  # norm batchnorm and init_std 1.0 by default
    tiny(cli, "none", "--norm", "none", "--init-std", "2")
    tiny(cli, "two", "--init-std", "2.0")
    spec = sweep_file(
        tmp_path, base={"depth": 2, "width": 4, "batch_size": 4, "device": "cpu"}, grid={"init": ["xavier"]}
    )
    assert cli("sweep", spec, "--out", cli.out, "--no-progress").exit_code == 0
    assert sorted(listed(cli, "--where", "norm=batchnorm")) == ["depth-study/plain", "depth-study/two", "sweeps/s"]
    for value in ("2", "2.0", "2e0", "2.000"):
        assert sorted(listed(cli, "--where", f"init_std={value}")) == ["depth-study/none", "depth-study/two"]
    assert sorted(listed(cli, "--where", "init_std=1")) == ["depth-study/plain", "sweeps/s"]
    assert sorted(listed(cli, "--where", "init=xavier")) == ["sweeps/s"]  # a grid value
    assert sorted(listed(cli, "--where", "init=kaiming")) == [
        "depth-study/none",
        "depth-study/plain",
        "depth-study/two",
    ]
    assert sorted(listed(cli, "--where", "depth=3", "--where", "norm=none")) == ["depth-study/none"]
    assert sorted(listed(cli, "--where", "momentum=0.1")) == []  # another study's key: no depth run has it
    assert names(bncli.list_runs(cli.out, where={"init_std": 2})) == ["depth-study/none", "depth-study/two"]
    assert names(bncli.list_runs(cli.out, where={"norm": ["none", "batchnorm"]})) == sorted(listed(cli))


@pytest.mark.parametrize(
    "args, says",
    [
        (["--where", "nope=1"], "--where: 'nope' is not a setting of any study"),
        (["--where", "norm=nonee"], "--where: norm: 'nonee' is not one of"),
        (["--where", "foo=bar", "--study", "running-stats"], "not a setting of running-stats"),
        (["--where", "momentum=0.1", "--study", "depth-study"], "not a setting of depth-study"),
        (["--status", "okk"], "--status: 'okk' is not one of running, ok, diverged, failed, interrupted, damaged"),
        (["--study", "depth"], "--study: 'depth' is not one of depth-study"),
        (["--where", "init"], "--where: expected KEY=VALUE"),
    ],
)
def test_where_status_and_study_typos_are_refused_in_one_line(cli, args, says):
    tiny(cli, "plain")
    for fmt in ("table", "json"):
        line = one_line(cli("runs", cli.out, *args, "--format", fmt), 2)
        assert says in line, line
    if args[0] == "--where" and "=" in args[1]:
        with pytest.raises(results.BncliError, match=says.split(": ", 1)[-1][:12]):
            results.select([], where=[args[1]], study=args[3] if len(args) > 3 else None)


def test_plot_where_reads_values_as_runs_where_does(cli, tmp_path):
    a, b = tiny(cli, "a", "--init-std", "2"), tiny(cli, "b")
    assert cli("plot", a, b, "--where", "init_std=2.0", "--out", tmp_path / "p.png").exit_code == 0
    assert "init_std=2" in cli("runs", cli.out, "--where", "init_std=2.0").output
    line = one_line(cli("plot", a, b, "--where", "norm=nonee", "--out", tmp_path / "q.png"), 2)
    assert "norm: 'nonee' is not one of" in line and "did you mean 'none'" in line


# -- 24.14: what the listing costs --------------------------------------------------------------------


def test_runs_reads_only_what_it_shows_and_show_lists_once(cli, monkeypatch):
    for name in ("a", "b"):
        tiny(cli, name)
    real = results.list_runs
    calls = []

    def counted(out):
        calls.append(out)
        return real(out)

    def never(*a, **k):
        raise AssertionError("a listing read a CSV")

    monkeypatch.setattr(results, "read_table", never)
    monkeypatch.setattr(results, "list_runs", counted)
    assert [e["status"] for e in listed(cli).values()] == ["ok", "ok"] and len(calls) == 1
    calls.clear()
    r = cli("show", cli.out)
    assert r.exit_code == 0 and "2 of 2 listed" in r.output and len(calls) == 1  # listed once
    monkeypatch.setattr(results, "_run_entry", never)  # compare RESULTS x: refused on the first run found
    line = one_line(cli("compare", cli.out, cli.out / "depth-study" / "a"), 2)
    assert "is a results directory, not a run" in line and len(calls) == 1


# -- 23.13: a narrow terminal keeps name, status and settings ---------------------------------------


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_runs_on_a_narrow_terminal_drops_kind_and_study_first(cli, monkeypatch, columns):
    from bncli import cli as cli_module

    tiny(cli, "a-rather-long-run-name-that-takes-room", "--init", "normal", "--norm", "none", "--init-std", "2")
    tiny(cli, "b")
    monkeypatch.setattr(cli_module, "_is_terminal", lambda stream: True)
    monkeypatch.setenv("COLUMNS", str(columns))
    r = cli("runs", cli.out)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    header = next(ln for ln in lines if "name" in ln)
    assert [w for w in header.replace("┃", " ").split()] == ["name", "status", "settings"]
    assert "too narrow for kind, study, started, wall_s" in " ".join(ln.strip() for ln in lines)
    assert max(len(ln) for ln in lines if ln.startswith(("┃", "│", "┏", "└"))) <= columns
    body = "".join(ln.split("│")[1].strip() for ln in lines if ln.startswith("│"))  # the name column, unfolded
    assert "depth-study/a-rather-long-run-name-that-takes-room" in body and "depth-study/b" in body
    cells = " ".join(ln.split("│")[3].strip() for ln in lines if ln.startswith("│"))
    assert "norm=none" in cells and "init=normal" in cells


# -- 23.20: runs, show and compare only read files: no torch ------------------------------------------


def test_runs_show_and_compare_never_import_torch(cli, tmp_path):
    a, b = tiny(cli, "a"), tiny(cli, "b", "--init", "normal")
    code = f"""
import sys
from bncli.cli import app
for args in (["runs", {str(cli.out)!r}], ["show", {str(a)!r}], ["show", {str(cli.out)!r}],
             ["compare", {str(a)!r}, {str(b)!r}], ["runs", {str(cli.out)!r}, "--format", "json"]):
    try:
        app(args)
    except SystemExit as e:
        assert e.code in (0, None), (args, e.code)
    assert "torch" not in sys.modules, args
print("no torch")
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no torch" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


# -- 23.12: any saved settings list, lists shown one way ----------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SCALARS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)
VALUES = st.one_of(SCALARS, st.lists(st.one_of(st.integers(-(2**40), 2**40), st.floats(), st.none()), max_size=5))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_runs_lists_any_saved_settings_of_every_study(tmp_path_factory, monkeypatch, data):
    from typer.testing import CliRunner

    from bncli import cli as cli_module
    from bncli import config
    from bncli.cli import app
    from bncli.errors import word

    out = tmp_path_factory.mktemp("r")
    made = {}
    for study in studies_names():
        fields = list(results.defaults(study))
        chosen = data.draw(st.lists(st.sampled_from(fields), unique=True, max_size=4), label=study)
        settings_ = {**results.defaults(study), **{k: data.draw(VALUES, label=f"{study}.{k}") for k in chosen}}
        d = out / study / "r"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(config.dump_yaml({"study": study, **settings_}))
        meta = {"study": study, "status": "ok", "started_at": "2026-01-01T00:00:00+00:00", "wall_seconds": 0.5}
        (d / "meta.json").write_text(json.dumps(meta))
        made[f"{study}/r"] = settings_
    runner = CliRunner()
    for fmt in ("table", "csv", "json"):
        r = runner.invoke(app, ["runs", str(out), "--format", fmt])
        assert r.exit_code == 0 and r.exception is None, r.output
    monkeypatch.setattr(cli_module, "_is_terminal", lambda stream: True)
    for columns in ("0", "60"):
        monkeypatch.setenv("COLUMNS", columns)
        r = runner.invoke(app, ["runs", str(out)])
        assert r.exit_code == 0 and r.exception is None and f"{len(made)} of {len(made)} listed" in r.output
    monkeypatch.setenv("COLUMNS", "140")
    for entry in results.list_runs(out):
        assert entry["status"] == "ok", entry
        run = results.open_run(out / entry["name"], table=False)
        shown = results.settings_line(run).removeprefix("settings: ")
        assert results.settings_text(entry) == ("" if shown == "defaults" else shown)  # runs says what show says
        for k, v in entry["settings"].items():
            if isinstance(v, list):  # one way everywhere: word's, as show and plot titles write a list
                assert f"{k}={word(v)}" in results.settings_text(entry)


def studies_names():
    from bncli import studies

    return studies.names()
