"""Messages: enum refusals with a did-you-mean, unknown fields, no Python names, a config for
another study, the help's dtype list, blank lines and plurals (issue 12, section 6)."""

import json
import re
from pathlib import Path

import pytest
import typer
import yaml
from helpers import sweep_file

import bncli
from bncli import cli as climod
from bncli import report, results, studies
from bncli.choices import Backend, Format
from bncli.errors import BncliError, not_a_field, not_one_of, plural
from bncli.fields import DTYPES
from bncli.studies.depth.components import INITS

ROOT = Path(__file__).resolve().parents[1]
ENUMS = "Init|Arch|Norm|Activation|BNMode|Order|DType|FloatType|InputKind|Format|Backend|Choice"
INTERNAL = re.compile(rf"<\w+\.\w+: |\b({ENUMS})\.\w")  # <DType.float32: 'float32'>, DType.float32


def one_line(r, code=2) -> str:
    """A refusal: exit `code`, one line `Error: ...` on stderr, nothing on stdout."""
    assert r.exit_code == code, r.output
    try:
        err = r.stderr
        assert r.stdout == "", repr(r.stdout)
    except ValueError:  # click < 8.2 (make test-min) captures the two streams as one
        err = r.output
    assert err.count("\n") == 1 and err.startswith("Error: "), repr(err)
    return err.rstrip("\n")


def enum_flags():
    """(command, flag, choices) for every closed-choice flag of every command."""
    group = typer.main.get_command(climod.app)
    ctx = group.context_class(group)  # typer's own click: the tests need no click of their own
    found = []
    for name in group.list_commands(ctx):
        for param in group.get_command(ctx, name).params:
            choices = climod._choices(param)
            if choices and param.opts[0].startswith("--"):
                found.append((name, max(param.opts, key=len), choices))
    return found


POSITIONAL = {"sweep": ["s.yaml"], "show": ["."], "plot": ["."]}  # a command's required argument


def test_every_enum_flag_is_found():
    flags = {(c, f) for c, f, _ in enum_flags()}
    assert {
        ("depth-study", "--init"),
        ("depth-study", "--dtype"),
        ("running-stats", "--dtype"),
        ("running-stats", "--input"),
        ("convergence", "--dtype"),
        ("sweep", "--backend"),
        ("runs", "--format"),
        ("show", "--format"),
    } <= flags


@pytest.mark.parametrize("command,flag,choices", enum_flags(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_enum_flag_refuses_in_one_line_with_a_did_you_mean(cli, command, flag, choices):
    typo = choices[0][0] + choices[0][2:]  # a letter left out
    line = one_line(cli(command, *POSITIONAL.get(command, []), flag, typo))
    assert line == f"Error: {flag}: {typo!r} is not one of {', '.join(choices)} (did you mean {choices[0]!r}?)"
    line = one_line(cli(command, *POSITIONAL.get(command, []), f"{flag}=zzz"))
    assert line == f"Error: {flag}: 'zzz' is not one of {', '.join(choices)}"


def test_the_examples_of_the_issue(cli):
    assert one_line(cli("depth-study", "--init", "kaimng")).endswith(
        "is not one of kaiming, kaiming_uniform, xavier, xavier_uniform, normal, trunc_normal, lecun_normal, "
        "orthogonal, default (did you mean 'kaiming'?)"
    )
    assert one_line(cli("depth-study", "--init", "foo")).startswith("Error: --init: 'foo' is not one of kaiming, ")
    assert one_line(cli("depth-study", "--norm", "BatchNorm")).endswith("(did you mean 'batchnorm'?)")
    assert "did you mean" not in one_line(cli("running-stats", "--dtype", "bfloat16"))  # not a typo of float64


def test_helpers():
    assert not_one_of("kaimng", list(INITS)).endswith("(did you mean 'kaiming'?)")
    assert not_one_of(4, [1, 2, 3]) == "4 is not one of 1, 2, 3"
    assert (
        not_a_field("depht", "depth-study", ["depth", "width"]) == "not a field of depth-study; did you mean 'depth'?"
    )
    assert not_a_field("zzz", "toy", ["a", "b"]) == "not a field of toy; accepted fields: a, b"
    assert [plural(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"


# -- config files and the Python API -------------------------------------------------------------


@pytest.mark.parametrize(
    "text,message",
    [
        ("depht: 3\n", "depht in {f}: not a field of depth-study; did you mean 'depth'?"),
        ("zzz: 3\n", "zzz in {f}: not a field of depth-study; accepted fields: depth, width, batch_size, init, "),
        ("init: kaimin\n", "init in {f}: 'kaimin' is not one of kaiming, kaiming_uniform, "),
        (
            "norm: layernrom\n",
            "norm in {f}: 'layernrom' is not one of batchnorm, layernorm, groupnorm, rmsnorm, "
            "instancenorm, none (did you mean 'layernorm'?)",
        ),
    ],
)
def test_config_file_fields_and_values(cli, tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    line = one_line(cli("depth-study", "--config", f))
    assert line.startswith("Error: " + message.format(f=f)), line


def test_api_fields_and_values():
    with pytest.raises(BncliError) as e:
        bncli.load("depth-study", depht=3)
    assert str(e.value) == "depht: not a field of depth-study; did you mean 'depth'?"
    with pytest.raises(BncliError) as e:
        bncli.load("running-stats", input="randm")
    assert str(e.value) == "input: 'randm' is not one of constant, randn (did you mean 'randn'?)"
    with pytest.raises(BncliError) as e:
        bncli.load("running-stats", dims=4)
    assert str(e.value) == "dims: 4 is not one of 1, 2, 3"
    with pytest.raises(BncliError) as e:
        bncli.run("depth-studdy")
    assert (
        str(e.value) == "study: 'depth-studdy' is not one of depth-study, running-stats, convergence, probe, train "
        "(did you mean 'depth-study'?)"
    )


def test_sweep_file_keys_and_grid(cli, tmp_path):
    f = sweep_file(tmp_path, "a", grid={"nrom": ["none"]})
    assert (
        one_line(cli("sweep", f, "--out", tmp_path))
        == f"Error: {f}: grid.nrom: not a field of depth-study; did you mean 'norm'?"
    )
    f = sweep_file(tmp_path, "b", bsae={})
    assert (
        one_line(cli("sweep", f, "--out", tmp_path))
        == f"Error: {f}: bsae: not a key of a sweep file; did you mean 'base'?"
    )
    f = sweep_file(tmp_path, "c", study="depht-study")
    assert one_line(cli("sweep", f, "--out", tmp_path)) == (
        f"Error: {f}: study: 'depht-study' is not one of depth-study, running-stats, convergence, probe, train "
        "(did you mean 'depth-study'?)"
    )


# -- no Python names in any message ---------------------------------------------------------------


def test_enums_read_as_their_values():
    from bncli import flags

    init = flags._choice_type(studies.get("depth-study").CONFIG.FIELDS["init"])  # the enum of --init
    for member in [*Format, *Backend, *init]:
        word = getattr(member, "value", member)
        assert str(member) == f"{member}" == "{}".format(member) == word  # noqa: UP032
    assert f"{Format.json:>6}" == "  json"


def test_no_internal_names_in_refusals(cli, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dtype: bfloat16\n")
    outputs = [
        one_line(cli("running-stats", "--dtype", "bfloat16")),
        one_line(cli("running-stats", "--config", f)),
        one_line(cli("convergence", "--dtype", "bfloat16")),
        one_line(
            cli(
                "sweep",
                sweep_file(tmp_path, "g", "running-stats", grid={"dtype": ["float32", "bfloat16"]}),
                "--out",
                tmp_path / "o",
            )
        ),
        one_line(
            cli("sweep", sweep_file(tmp_path, "i", grid={"init": ["kaiming", "kaimng"]}), "--out", tmp_path / "o")
        ),
    ]
    for kw in ({"dtype": "bfloat16"}, {"dtype": Format.table}, {"input": "x"}, {"dims": 4}):
        with pytest.raises(BncliError) as e:
            bncli.load("running-stats", **kw)
        outputs.append(str(e.value))
    with pytest.raises(BncliError) as e:
        bncli.load("depth-study", depth=Format.json)  # a choice where a number belongs: shown as its value
    outputs.append(str(e.value))
    assert outputs[-1] == "depth: Input should be a valid integer (got 'json')"
    assert outputs[0] == "Error: --dtype: 'bfloat16' is not one of float32, float64"
    assert outputs[1] == f"Error: dtype in {f}: 'bfloat16' is not one of float32, float64"
    assert outputs[3].endswith("run dtype=bfloat16,seed=0: dtype: 'bfloat16' is not one of float32, float64")
    assert outputs[6] == "dtype: 'table' is not one of float32, float64"
    for text in outputs:
        assert not INTERNAL.search(text), text


def test_no_internal_names_in_what_a_run_writes_and_shows(cli, tmp_path):
    r = cli(
        "depth-study",
        "--depth",
        3,
        "--width",
        8,
        "--init",
        "xavier",
        "--norm",
        "layernorm",
        "--dtype",
        "float64",
        "--name",
        "d",
    )
    assert r.exit_code == 0, r.output
    run = cli.out / "depth-study" / "d"
    texts = [
        r.output,
        (run / "config.yaml").read_text(),
        (run / "meta.json").read_text(),
        cli("show", run).output,
        cli("show", run, "--format", "json").output,
        cli("runs", cli.out).output,
        cli("running-stats", "--dtype", "float64", "--format", "json").output,
    ]
    for text in texts:
        assert not INTERNAL.search(text), text
    assert "init=xavier" in texts[5] and "dtype=float64" in texts[5]


# -- the help's dtype list is what each command accepts ------------------------------------------


def help_choices(cli, command, flag):
    text = cli(command, "--help").output
    return re.search(rf"{flag} [<\[]([\w|-]+)[>\]]", text).group(1).split("|")  # click 8.1 writes [a|b]


@pytest.mark.parametrize(
    "command,listed",
    [
        ("running-stats", ["float32", "float64"]),
        ("convergence", ["float32", "float64"]),
        ("depth-study", ["float32", "float64", "bfloat16"]),
    ],
)
def test_dtype_help_lists_exactly_what_is_accepted(cli, command, listed):
    assert help_choices(cli, command, "--dtype") == listed
    for dtype in listed:  # accepted by the config, the same as the flag validates
        assert bncli.load(command, dtype=dtype).dtype == dtype
    for dtype in set(DTYPES) - set(listed) | {"float16"}:
        line = one_line(cli(command, "--dtype", dtype))
        assert line.startswith(f"Error: --dtype: {dtype!r} is not one of {', '.join(listed)}")
        with pytest.raises(BncliError, match=rf"^dtype: {dtype!r} is not one of {', '.join(listed)}"):
            bncli.load(command, dtype=dtype)


def test_running_stats_help_says_no_bfloat16(cli):
    text = " ".join(cli("running-stats", "--help").output.split())
    assert re.search(r"--dtype [<\[]float32\|float64[>\]]", text) and "no bfloat16" in text


# -- a config for another study -------------------------------------------------------------------


def test_a_config_of_another_study_says_whose_it_is(cli, tmp_path):
    f = ROOT / "configs" / "convergence.yaml"  # by its study: key
    assert one_line(cli("running-stats", "--config", f)) == (
        f"Error: --config: {f} is a convergence config (study: convergence); run it with bncli convergence --config {f}"
    )
    g = tmp_path / "convergence.yaml"  # by its fields
    g.write_text("".join(line for line in f.read_text().splitlines(True) if not line.startswith("study:")))
    assert one_line(cli("running-stats", "--config", g)) == (
        f"Error: --config: {g} is a convergence config (fields keras_momentum, input_mean, input_std); "
        f"run it with bncli convergence --config {g}"
    )
    g.write_text("depth: 3\nwidth: 8\ninit: xavier\n")
    assert one_line(cli("convergence", "--config", g)) == (
        f"Error: --config: {g} is a depth-study config (fields depth, width, init); "
        f"run it with bncli depth-study --config {g}"
    )
    with pytest.raises(BncliError, match=r"^config_file: .* is a depth-study config .*bncli\.depth_study\("):
        bncli.load("convergence", g)
    for name in ("depth_study", "depth_study_conv", "depth_study_resnet", "running_stats"):
        assert "is a " in one_line(cli("convergence", "--config", ROOT / "configs" / f"{name}.yaml"))


@pytest.mark.parametrize(
    "name,study,smaller",
    [
        ("depth_study", "depth-study", ["--depth", "5"]),
        ("depth_study_conv", "depth-study", ["--depth", "3"]),
        ("depth_study_resnet", "depth-study", ["--blocks", "1"]),
        ("running_stats", "running-stats", []),
        ("convergence", "convergence", ["--iterations", "20"]),
    ],
)
def test_shipped_configs_run_with_their_own_study(cli, name, study, smaller):
    """Each shipped config runs with its own study's command (at a smaller size, given by a flag
    over the file), and the run's config.yaml holds the file's settings (null ones resolved)."""
    path = ROOT / "configs" / f"{name}.yaml"
    r = cli(study, "--config", path, *smaller, "--name", name, "--quiet")
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((cli.out / study / name / "config.yaml").read_text())
    given = yaml.safe_load(path.read_text())
    flags = {smaller[i].lstrip("-").replace("-", "_") for i in range(0, len(smaller), 2)}
    kept = [k for k, v in given.items() if k not in flags and v is not None]  # null: follows other fields
    assert {k: given[k] for k in kept} == {k: saved[k] for k in kept}


def test_the_study_key(cli, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("study: convergence\n")
    assert one_line(cli("running-stats", "--config", f)) == (
        f"Error: --config: {f} is a convergence config (study: convergence); run it with bncli convergence --config {f}"
    )
    f.write_text("study: running-stats-convergence\niterations: 3\n")  # the name convergence had before
    assert bncli.load("convergence", f).iterations == 3
    f.write_text("study: convergance\n")
    assert one_line(cli("convergence", "--config", f)) == (
        f"Error: study in {f}: 'convergance' is not one of depth-study, running-stats, convergence, probe, train "
        "(did you mean 'convergence'?)"
    )


def test_a_saved_config_yaml_names_its_study_and_reads_back(cli, tmp_path):
    r = cli("running-stats", "--dims", 2, "--name", "a")
    assert r.exit_code == 0, r.output
    run = cli.out / "running-stats" / "a"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert list(saved)[0] == "study" and saved["study"] == "running-stats" and saved["dims"] == 2
    again = cli("running-stats", "--config", run / "config.yaml", "--name", "b")  # the key is checked, not a field
    assert again.exit_code == 0, again.output
    assert (run / "config.yaml").read_bytes() == (cli.out / "running-stats" / "b" / "config.yaml").read_bytes()
    assert one_line(cli("depth-study", "--config", run / "config.yaml")) == (
        f"Error: --config: {run / 'config.yaml'} is a running-stats config (study: running-stats); "
        f"run it with bncli running-stats --config {run / 'config.yaml'}"
    )
    opened = results.open_run(run)
    assert "study" not in opened.settings and opened.settings["dims"] == 2
    shown = cli("show", run, "--format", "json")
    assert shown.exit_code == 0 and "study" not in json.loads(shown.output)["settings"]
    listed = {e["name"]: e for e in results.list_runs(cli.out)}
    assert "study" not in listed["running-stats/a"]["settings"] and listed["running-stats/a"]["settings"]["dims"] == 2


def test_a_sweep_resumes_with_study_keys_in_its_runs(cli, tmp_path):
    f = sweep_file(tmp_path, "s", "running-stats", grid={"dims": [1, 2]})
    assert cli("sweep", f, "--out", tmp_path / "o").exit_code == 0
    d = tmp_path / "o" / "sweeps" / "s"
    assert yaml.safe_load((d / "runs" / "dims=1,seed=0" / "config.yaml").read_text())["study"] == "running-stats"
    r = cli("sweep", f, "--out", tmp_path / "o", "--resume")
    assert r.exit_code == 0 and "resumed: 2 of 2 runs were already done" in r.output, r.output


# -- blank lines and plurals ----------------------------------------------------------------------


def test_a_sweeps_output_starts_with_its_table_and_refusals_are_one_line(cli, tmp_path):
    f = sweep_file(tmp_path, "one", "running-stats")
    r = cli("sweep", f, "--out", tmp_path / "o")  # with its progress bar, as by default
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "sweep one" and "" not in lines, r.stdout
    assert "1 run: 1 ok, 0 diverged, 0 failed" in lines
    r = cli("sweep", f, "--out", tmp_path / "o", "--resume")
    assert "resumed: 1 of 1 run was already done" in r.stdout.splitlines()
    one_line(cli("sweep", f, "--out", tmp_path / "o"))  # exists: refused before any bar
    one_line(cli("sweep", sweep_file(tmp_path, "bad", "running-stats", base={"dims": 7}), "--out", tmp_path / "o"))


def test_a_runs_output_has_no_blank_line(cli):
    r = cli("depth-study", "--depth", 3, "--width", 8)
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("layer ") and "" not in r.stdout.splitlines()
    r = cli("runs", cli.out)
    assert r.stdout.splitlines()[-1] == "1 of 1 listed"


def test_sweep_counts_say_1_run():
    import pandas as pd

    one = pd.DataFrame({"run": ["a", "a"], "status": ["ok", "ok"]})
    assert str(report.sweep_counts(one)) == "1 run: 1 ok, 0 diverged, 0 failed"
    two = pd.DataFrame({"run": ["a", "b"], "status": ["ok", "failed"]})
    assert str(report.sweep_counts(two)) == "2 runs: 1 ok, 0 diverged, 1 failed"


def test_registry_is_what_the_messages_list():
    assert studies.names() == ["depth-study", "running-stats", "convergence", "probe", "train"]
