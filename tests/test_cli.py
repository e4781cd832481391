"""The command line, through CliRunner: files written, configs reproduced, clean errors."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import AUTO, CONFIGS, column, only_run, run_dirs, table_rows


def test_version_and_help(cli):
    from bncli import __version__

    r = cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"bncli {__version__}"
    r = cli("--help")
    assert r.exit_code == 0
    assert "depth-study" in r.output and "running-stats" in r.output


@pytest.mark.parametrize(
    "command", ["", "depth-study", "running-stats", "convergence", "sweep", "plot", "runs", "show", "compare"]
)
def test_help_does_not_import_heavy_modules(command):
    argv = ["bncli", *([command] if command else []), "--help"]
    code = (
        f"import sys; from bncli.cli import main; sys.argv = {argv!r}\n"
        "try: main()\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'pydantic') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"Usage: bncli {command}".rstrip()) and "HEAVY []" in out


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "bncli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("bncli ")


def test_depth_study_writes_its_files(cli):
    r = cli("depth-study", "--depth", 12, "--width", 32, "--every", 5, "--name", "demo")
    assert r.exit_code == 0, r.output
    run = cli.out / "depth-study" / "demo"
    assert f"results: {run}" in r.output
    assert "std over 12 layers: min" in r.output
    assert column(r.output, "layer") == ["0", "5", "10", "11"]
    table = pd.read_csv(run / "layers.csv")
    assert list(table.columns) == [
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
    assert table["layer"].tolist() == list(range(12))
    # statistics that are off are empty cells (read back as nan), not the word nan
    lines = (run / "layers.csv").read_text().splitlines()
    assert lines[1].split(",")[7:10] == ["", "", ""]
    assert table[["erank", "grad_std", "weight_grad_norm"]].isna().all().all()
    header = table_rows(r.output)[0]
    assert "theory_std" in header and "chan_var" in header and "erank" not in header and "grad_std" not in header
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["diverged_at"] is None and meta["seed"] == 0
    assert meta["device"] == str(AUTO) and meta["dtype"] == "float32" and meta["wall_seconds"] > 0
    for key in ("bncli_version", "torch_version", "started_at", "git_commit"):
        assert key in meta
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["depth"] == 12 and cfg["width"] == 32 and cfg["init"] == "kaiming"


def test_saved_config_reproduces_the_run(cli, tmp_path):
    r = cli("depth-study", "--depth", 9, "--width", 24, "--init", "xavier", "--seed", 5, "--name", "a")
    assert r.exit_code == 0, r.output
    first = cli.out / "depth-study" / "a"
    r = cli("depth-study", "--config", first / "config.yaml", "--name", "b")
    assert r.exit_code == 0, r.output
    second = cli.out / "depth-study" / "b"
    assert (first / "layers.csv").read_bytes() == (second / "layers.csv").read_bytes()
    assert (first / "config.yaml").read_text() == (second / "config.yaml").read_text()


def test_divergence_is_a_result_not_an_error(cli):
    r = cli("depth-study", "--init", "normal", "--norm", "none")
    assert r.exit_code == 0, r.output
    run = only_run(cli.out, "depth-study")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "diverged"
    assert f"diverged: non-finite output at layer {meta['diverged_at']}" in r.output
    table = pd.read_csv(run / "layers.csv")
    assert len(table) == meta["diverged_at"] + 1
    assert table["std"].isna().iloc[-1]


def test_default_names_never_collide(cli):
    for _ in range(3):
        assert cli("depth-study", "--depth", 2, "--width", 8).exit_code == 0
    names = [p.name for p in run_dirs(cli.out, "depth-study")]
    assert len(names) == 3 and all(n.split("-", 2)[2].startswith("kaiming-batchnorm") for n in names)


def test_an_existing_run_is_never_overwritten(cli):
    assert cli("depth-study", "--depth", 2, "--width", 8, "--name", "x").exit_code == 0
    before = (cli.out / "depth-study" / "x" / "layers.csv").read_bytes()
    r = cli("depth-study", "--depth", 3, "--width", 8, "--name", "x")
    assert r.exit_code == 2 and "already exists" in r.output
    assert (cli.out / "depth-study" / "x" / "layers.csv").read_bytes() == before


def test_running_stats_prints_and_writes(cli):
    r = cli("running-stats", "--momentum", 0.3, "--name", "nb")
    assert r.exit_code == 0, r.output
    assert "torch matches the update formula on all 20 values (running_mean and running_var, 5 channels" in r.output
    assert "running_mean (5,)" in r.output and "num_batches_tracked ()" in r.output
    run = cli.out / "running-stats" / "nb"
    t = pd.read_csv(run / "running_stats.csv")
    assert t[t.iteration == 1]["running_mean"].tolist() == pytest.approx([0.51, 1.02, 1.53, 2.04, 2.55])
    assert yaml.safe_load((run / "config.yaml").read_text())["momentum"] == 0.3
    assert json.loads((run / "meta.json").read_text())["status"] == "ok"


def test_running_stats_momentum_none_and_dims(cli):
    r = cli("running-stats", "--momentum", "none", "--dims", 3, "--name", "cum")
    assert r.exit_code == 0, r.output
    assert "running_mean (4,)" in r.output
    cfg = yaml.safe_load((cli.out / "running-stats" / "cum" / "config.yaml").read_text())
    assert cfg["momentum"] is None and cfg["feature_shape"] == [2, 2, 3]


BAD = [
    (["depth-study", "--init", "kaimin"], "--init"),
    (["depth-study", "--norm", "weightnorm"], "--norm"),
    (
        ["depth-study", "--norm", "groupnorm", "--width", "48"],
        "groups must divide width for norm groupnorm: width 48 is not a multiple of groups 32",
    ),
    (["depth-study", "--bn-mode", "test"], "--bn-mode"),
    (["depth-study", "--order", "norm-act"], "--order"),
    (["depth-study", "--residual", "-1"], "--residual: Input should be greater than or equal to 0"),
    (["depth-study", "--negative-slope", "-0.1"], "--negative-slope: Input should be greater than or equal to 0"),
    (["depth-study", "--init-gain", "0"], "--init-gain: Input should be greater than 0"),
    (["depth-study", "--activation", "swish"], "--activation"),
    (["depth-study", "--dtype", "float16"], "--dtype"),
    (["depth-study", "--depth", "0"], "--depth: Input should be greater than or equal to 1"),
    (["depth-study", "--width", "0"], "--width: Input should be greater than or equal to 1"),
    (["depth-study", "--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
    (["depth-study", "--batch-size", "1"], "batch_size must be at least 2 with norm batchnorm"),
    (["depth-study", "--init-std", "-1"], "--init-std: Input should be greater than 0"),
    (["depth-study", "--config", "missing.yaml"], "--config: file not found: missing.yaml"),
    (["depth-study", "--device", "tpu"], "--device: must be auto, cpu, cuda or cuda:N"),
    (["depth-study", "--name", "../escape"], "--name: '../escape' is not a valid name"),
    (["depth-study", "--name", "a/b"], "--name: 'a/b' is not a valid name"),
    (["running-stats", "--momentum", "1.5"], "--momentum: Input should be less than or equal to 1"),
    (["running-stats", "--momentum", "-0.5"], "--momentum: Input should be greater than or equal to 0"),
    (["running-stats", "--momentum", "fast"], "--momentum: expected a number in [0, 1] or none"),
    (["running-stats", "--dims", "4"], "--dims: 4 is not one of 1, 2, 3"),
    (["running-stats", "--batch-size", "1"], "at least 2 values per channel"),
    (["running-stats", "--input", "ones"], "--input"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clean_line(cli, args, message):
    r = cli(*args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert message in lines[0]
    assert "Traceback" not in r.output
    assert not cli.out.exists() or not any(cli.out.rglob("meta.json"))


@pytest.mark.parametrize(
    "text,message",
    [
        ("depth: [1\n", "not valid YAML at line 2"),
        ("depht: 3\n", "depht in"),
        ("depth: three\n", "depth in"),
        ("norm: batchnorm\nbatch_size: 1\n", "batch_size must be at least 2"),
    ],
)
def test_bad_config_file_is_one_clean_line(cli, tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = cli("depth-study", "--config", f)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.startswith("Error: ") and message in r.output and len(r.output.splitlines()) == 1
    assert not cli.out.exists()


def test_cuda_without_cuda_is_a_clean_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("depth-study", "--device", "cuda")
    assert r.exit_code == 2
    assert r.output.startswith("Error: --device cuda: CUDA is not available")
    assert not cli.out.exists()


def test_every_flag_of_a_config_field_is_made_from_its_spec():
    """No field is written twice: each study command's flags between --config and --out are its
    config's fields, in order, each with the spec's flag, help and default; and no module of
    bncli declares a typer.Option named like a config field (a hand-written copy)."""
    import ast

    import typer.main

    from bncli import flags, studies
    from bncli.cli import app

    group = typer.main.get_command(app)
    for study, model in CONFIGS.items():
        command = group.get_command(None, study)
        params = [p.name for p in command.params]
        own = list(studies.get(study).OPTIONS.FIELDS)
        assert params == ["config", *model.FIELDS, "out", "name", "format", "quiet", *own], study
        for p in command.params:
            f = model.FIELDS.get(p.name)
            if f is None:
                continue
            assert p.help == flags._help(f) and p.default is None, (study, p.name)
            if f.positional:  # probe's MODEL: the command's argument, named by its metavar
                assert p.param_type_name == "argument" and p.metavar == f.metavar, (study, p.name)
                continue
            assert p.opts[0] == (f.flag or flags.flag_name(p.name)).split("/")[0], (study, p.name)
            if p.show_default is not False:
                assert p.show_default == f.default_text(), (study, p.name)
    fields = {name for model in CONFIGS.values() for name in model.FIELDS}
    for path in (Path(__file__).resolve().parent.parent / "bncli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("typer.Option"):
                decls = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                assert not any(d.lstrip("-").replace("-", "_") in fields for d in decls), (path, decls)


@pytest.mark.parametrize("columns", ["40", "60", "80", "200"])
def test_piped_output_never_cuts_a_number(cli, monkeypatch, columns):
    """Into a pipe or a file (a CI log), whatever COLUMNS says, every value is there in full, in
    plain columns: no box lines, no colour codes."""
    from bncli.report import fmt

    monkeypatch.setenv("COLUMNS", columns)
    r = cli(
        "depth-study",
        "--init",
        "normal",
        "--norm",
        "none",
        "--grads",
        "--erank",
        "--depth",
        40,
        "--width",
        32,
        "--name",
        f"p{columns}",
    )
    assert r.exit_code == 0, r.output
    assert "…" not in r.output and "\x1b" not in r.output
    assert not any("\u2500" <= c <= "\u257f" for c in r.output)  # box drawing
    table = pd.read_csv(cli.out / "depth-study" / f"p{columns}" / "layers.csv")
    rows = table_rows(r.output)
    header, body = rows[0], rows[1:]
    assert len(body) == len(table) and all(len(cells) == len(header) for cells in body)
    for cells, (_, row) in zip(body, table.iterrows(), strict=True):
        shown = dict(zip(header, cells, strict=True))
        assert int(shown["layer"]) == row["layer"]
        assert all(shown[c] == fmt(float(row[c])) for c in ("mean", "std", "abs_max", "erank", "grad_std"))


def test_piped_sweep_and_show_tables_are_plain_columns(cli, tmp_path):
    from helpers import sweep_file

    path = sweep_file(
        tmp_path,
        "s",
        "depth-study",
        base={"depth": 6, "width": 8},
        grid={"init": ["kaiming", "normal"], "norm": ["batchnorm", "none"]},
        seeds=[0, 1],
    )
    r = cli("sweep", path, "--out", cli.out, "--no-progress")
    assert r.exit_code == 0, r.output
    rows = table_rows(r.output)
    assert rows[0] == ["init", "norm", "seeds", "last-layer std", "min std", "max std", "diverged"]
    assert [cells[:2] for cells in rows[1:]] == [
        ["kaiming", "batchnorm"],
        ["kaiming", "none"],
        ["normal", "batchnorm"],
        ["normal", "none"],
    ]
    assert not any("\u2500" <= c <= "\u257f" for c in r.output)
    assert table_rows(cli("show", cli.out / "sweeps" / "s").output) == rows
    listing = cli("runs", cli.out).output  # its last column, settings, is left-justified text
    assert "init=kaiming,normal" in listing and all(line == line.rstrip() for line in listing.splitlines())


def test_formats_and_quiet_for_scripts(cli):
    import json as jsonlib

    r = cli("depth-study", "--depth", 5, "--width", 8, "--quiet", "--name", "q")
    assert r.exit_code == 0 and r.output.strip() == str(cli.out / "depth-study" / "q")
    r = cli("depth-study", "--depth", 5, "--width", 8, "--format", "csv", "--name", "c")
    assert r.exit_code == 0 and r.output == (cli.out / "depth-study" / "c" / "layers.csv").read_text()
    r = cli("depth-study", "--init", "normal", "--norm", "none", "--depth", 50, "--format", "json", "--name", "j")
    doc = jsonlib.loads(r.output)  # strict JSON: a diverged layer's nan is null
    table = pd.read_csv(cli.out / "depth-study" / "j" / "layers.csv")
    assert doc["status"] == "diverged" and doc["info"]["diverged_at"] == len(table) - 1
    assert len(doc["rows"]) == len(table) and doc["rows"][-1]["std"] is None and doc["rows"][0]["erank"] is None
    assert doc["rows"][0]["std"] == table["std"][0] and doc["settings"]["init"] == "normal"
    shown = cli("show", cli.out / "depth-study" / "j", "--format", "json")
    assert jsonlib.loads(shown.output)["rows"] == doc["rows"]
    r = cli("running-stats", "--format", "csv", "--name", "rs")
    assert r.output == (cli.out / "running-stats" / "rs" / "running_stats.csv").read_text()


def test_bare_bncli_and_dash_h_print_the_help():
    for args in ([], ["-h"], ["depth-study", "-h"]):
        r = subprocess.run([sys.executable, "-m", "bncli", *args], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("Usage: ") and not r.stderr, (args, r.stderr)


@pytest.mark.parametrize("width", [40, 60, 80, 200])
def test_a_narrow_terminal_leaves_columns_out_and_never_cuts_a_number(tmp_path, width):
    """On a terminal, a table wider than the screen drops its last columns and names them; every
    value shown is whole, on its row's one line (not folded, not cut)."""
    import io

    from rich.table import Table

    from bncli import api, studies
    from bncli.cli import _consoles

    runs = [
        api.depth_study(init="normal", norm="none", depth=30, width=16, grads=True, erank=True, out=tmp_path),
        api.running_stats(out=tmp_path),
        api.convergence(iterations=30, out=tmp_path),
    ]
    dropped = []
    for run in runs:
        for part in studies.get(run.study).render(run, None):
            if not isinstance(part, Table):
                continue
            expected = [[str(c) for c in col._cells] for col in part.columns]
            headers = [str(col.header) for col in part.columns]
            buf = io.StringIO()
            _consoles()[1](file=buf, width=width, color_system=None).print(part)
            lines = buf.getvalue().splitlines()
            body = [[c.strip() for c in ln.strip("│").split("│")] for ln in lines if ln.startswith("│")]
            shown = len(body[0]) if body else 0
            assert len(body) == len(expected[0]) and all(len(b) == shown for b in body)  # one line per row
            assert [list(col) for col in zip(*body, strict=True)] == expected[:shown]
            assert shown >= 1 and max(len(ln) for ln in lines[: -1 if shown < len(headers) else None]) <= width
            dropped += headers[shown:]
            if shown < len(headers):
                assert lines[-1].startswith("(too narrow for ") or "too narrow for" in buf.getvalue()
                assert all(h in " ".join(lines) for h in headers[shown:])
    assert ("theory_std" in dropped) == (width < 120)  # the depth table, ~130 columns wide, fits only at 200


def test_shell_completion_completes_commands_and_choices():
    """`bncli --install-completion` installs Typer's completion; this is what the shell then asks."""
    import os

    def complete(words, cword):
        env = {**os.environ, "_BNCLI_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        script = Path(sys.executable).parent / "bncli"  # the console script the shell calls
        r = subprocess.run([script], env=env, capture_output=True, text=True)
        assert r.returncode == 0 and not r.stderr, r.stderr
        return r.stdout.split()

    assert complete("bncli dep", 1) == ["depth-study"]
    assert complete("bncli r", 1) == ["running-stats", "runs"]
    assert complete("bncli depth-study --norm ", 3) == list(CONFIGS["depth-study"].FIELDS["norm"].words())
    assert (
        "--install-completion"
        in subprocess.run([sys.executable, "-m", "bncli", "--help"], capture_output=True, text=True).stdout
    )


@pytest.mark.parametrize(
    "env,says",
    [
        ({}, "bash completion needs COMP_WORDS and COMP_CWORD"),
        ({"COMP_CWORD": "1"}, "bash completion needs COMP_WORDS,"),
        ({"COMP_WORDS": "bncli dep"}, "bash completion needs COMP_CWORD,"),
        ({"COMP_WORDS": "bncli dep", "COMP_CWORD": "abc"}, "COMP_CWORD: expected the index"),
        ({"COMP_WORDS": "bncli dep", "COMP_CWORD": "-1"}, "COMP_CWORD: expected the index"),
        ({"COMP_WORDS": "bncli dep", "COMP_CWORD": "1.5"}, "COMP_CWORD: expected the index"),
    ],
)
def test_a_completion_request_no_shell_would_make_is_one_line(env, says):
    """What bash always sets, missing or not a number: one line on stderr, never Typer's traceback."""
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("COMP_WORDS", "COMP_CWORD")}
    script = Path(sys.executable).parent / "bncli"
    r = subprocess.run(
        [script], env={**base, "_BNCLI_COMPLETE": "complete_bash", **env}, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ") and says in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_completion_that_fails_inside_typer_is_one_line(monkeypatch):
    from typer import _completion_classes
    from typer.testing import CliRunner

    from bncli.cli import app

    def broken(self):
        raise KeyError("COMP_POINT")

    monkeypatch.setattr(_completion_classes.BashComplete, "get_completion_args", broken)
    env = {"_BNCLI_COMPLETE": "complete_bash", "COMP_WORDS": "bncli dep", "COMP_CWORD": "1"}
    r = CliRunner().invoke(app, [], env=env, prog_name="bncli")
    assert r.exit_code == 1 and r.output == (
        "Error: _BNCLI_COMPLETE=complete_bash: shell completion failed: KeyError: 'COMP_POINT'\n"
    ), r.output


@pytest.mark.parametrize("width", [60, 80, 140])
def test_the_progress_bar_has_its_count_elapsed_time_rate_and_eta_whole_on_a_narrow_terminal(width):
    """What gives way on a narrow terminal is the run's name (ellipsised), never a number."""
    import io
    import re

    from rich.console import Console

    from bncli.cli import progress_bar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    bar = progress_bar(console)
    name = "init=kaiming_uniform,norm=batchnorm,activation=leaky_relu,seed=3"
    task = bar.add_task("sweep", total=48, completed=0, current=name)
    for done in (1, 2, 3):
        bar.update(task, completed=done, current=name)
    console.print(bar.get_renderable())
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line and len(line) <= width
    assert re.search(r" 3/48 \d:\d\d:\d\d [\d.e+]+/s eta (\d:\d\d:\d\d|-:--:--) ", line + " "), line
    assert ("…" in line) == (width < 90), line  # the name, cut only when it must be
