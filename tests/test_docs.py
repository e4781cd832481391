"""The README and docs/ cannot drift: their commands run and print what is shown (docs/make_docs.py)."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("make_docs", ROOT / "docs" / "make_docs.py")
make_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_docs)


def shown(name):
    return [pair for block in make_docs.BLOCK.findall((ROOT / name).read_text()) for pair in make_docs.commands(block)]


def pinned() -> bool:
    """Are click and typer the versions the docs were made with (constraints.txt)? Help is laid
    out differently by other versions (make test-min), which still must list the same flags."""
    from importlib.metadata import version

    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    return all(version(p) == pins.get(p) for p in ("click", "typer"))


def same_help(got: str, shown: str) -> bool:
    if pinned():
        return got == shown
    return set(re.findall(r"--[a-z][a-z-]*", got)) == set(re.findall(r"--[a-z][a-z-]*", shown))


def test_the_readme_is_short_and_its_first_screen_says_what_and_how():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 325
    first = "\n".join(text.splitlines()[:30])
    assert "![" in first and "make run" in first and "make test" in first


def test_the_readme_s_batchnorm_std_is_the_theory_column_s():
    """The std the README says BatchNorm-ReLU sits at is theory_std at the notebook's batch of 16
    (the table's column), and its large-batch limit is sqrt((pi - 1) / (2 pi))."""
    import math

    from bncli.studies.depth import theory

    text = " ".join((ROOT / "README.md").read_text().split())
    at16 = re.search(r"the mean-field (\d\.\d+) at batch 16", text)
    limit = re.search(r"\(2 pi\)\) = (\d\.\d+) as the batch grows", text)
    assert at16 and limit, "README: the BatchNorm std sentence"
    mu, sq = theory.sphere_moments(lambda z: z.clamp_min(0), 16, centred=True)
    assert at16.group(1) == f"{math.sqrt(sq - mu * mu):.4f}"
    assert limit.group(1) == f"{math.sqrt((math.pi - 1) / (2 * math.pi)):.4f}"
    table = [o for c, o in shown("README.md") if c == "bncli depth-study --init kaiming --every 20"]
    assert table and f"│     {at16.group(1)} │" in table[0]  # the table's theory_std column


def test_every_readme_command_exits_and_prints_as_shown():
    """In order, in one scratch directory, as make docs ran them; numbers and timestamps aside."""
    pairs = shown("README.md")
    assert len(pairs) >= 6
    with make_docs.scratch():
        for command, output in pairs:
            code, got = make_docs.run(command)
            assert (code != 0) == make_docs.ends_in_error(output), (command, code, got)
            if "--help" in command:
                assert same_help(got, output), command
            elif command.startswith("bncli runs"):  # newest first, to the second: runs of one second in any order
                assert sorted(make_docs.normalize(got).splitlines()) == sorted(
                    make_docs.normalize(output).splitlines()
                ), command
            else:
                assert make_docs.normalize(got) == make_docs.normalize(output), command


@pytest.mark.parametrize("name", ["docs/reference.md", "docs/sweeps.md"])
def test_help_excerpts_and_errors_in_docs_match(name):
    pairs = [(c, o) for c, o in shown(name) if "--help" in c or make_docs.ends_in_error(o)]
    assert pairs
    with make_docs.scratch():
        for command, output in pairs:
            code, got = make_docs.run(command)
            assert (code != 0) == make_docs.ends_in_error(output), command
            assert same_help(got, output) if "--help" in command else got == output, command


def test_the_normalization_masks_only_numbers_and_layout():
    a = "│ 0.4058 │ 2.882e+11 │\nresults: results/depth-study/20261201-045142-kaiming-batchnorm"
    b = "│ 0.41 │ 2.9e+11 │\nresults: results/depth-study/20270101-000000-kaiming-batchnorm"
    assert make_docs.normalize(a) == make_docs.normalize(b)
    assert make_docs.normalize(a) != make_docs.normalize(a.replace("kaiming", "xavier"))


def inline_commands(name):
    """`bncli ...` in code spans and in bash blocks (where a command has no shown output)."""
    text = (ROOT / name).read_text()
    spans = re.findall(r"`(bncli [^`]+)`", text)
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        spans += [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("bncli ")]
    return spans


@pytest.mark.parametrize(
    "name",
    [
        "README.md",
        "docs/sweeps.md",
        "docs/configs.md",
        "docs/statistics.md",
        "docs/guarantees.md",
        "docs/development.md",
        "docs/train.md",
    ],
)
def test_every_command_named_in_the_docs_parses(name):
    """A command named without its output must still be one bncli accepts: its flags and values."""
    import typer.main

    from bncli.cli import app

    group = typer.main.get_command(app)
    for span in inline_commands(name):
        args = shlex.split(span.split("|")[0])[1:]
        if not args or args[0].startswith("-"):
            continue
        command = group.get_command(None, args[0])
        assert command is not None, span
        words = [a for a in args[1:] if not re.fullmatch(r"[A-Z_]+(\.\.\.)?", a)]  # PATH, RUN...: placeholders
        try:
            command.make_context(args[0], words)
        except Exception as e:  # click's usage errors: an unknown flag, a bad value
            if hasattr(e, "format_message") and "Missing argument" not in e.format_message():
                pytest.fail(f"{name}: `{span}`: {e.format_message()}")


def anchors(path):
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_the_docs_resolve():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", path.read_text()):
            if target.startswith("http"):
                continue
            file = path.parent / target if target else path
            assert file.exists(), (path.name, target)
            if anchor and file.suffix == ".md":
                assert anchor in anchors(file), (path.name, target, anchor)


@pytest.mark.parametrize("name", make_docs.FILES)
def test_every_generated_block_is_made_by_make_docs_and_filled(name):
    """A generated block names a function of docs/make_docs.py and holds what it made: the
    numbers of docs/statistics.md, theory.md and guarantees.md come from runs, not by hand."""
    for m in make_docs.GENERATED.finditer((ROOT / name).read_text()):
        assert callable(getattr(make_docs, m.group(2), None)), (name, m.group(2))
        assert m.group(0).count("\n") > 2, f"{name}: block {m.group(2)} is empty: run make docs"


@pytest.mark.parametrize("name", ["docs/configs.md", "docs/statistics.md", "docs/probe.md", "docs/theory.md"])
def test_the_tables_made_from_the_specs_are_current(name):
    """docs/configs.md lists every field of every study, and docs/statistics.md every column of
    layers.csv, as `make docs` makes them from the config specs and the statistics' records."""
    text = (ROOT / name).read_text()
    assert make_docs.generate(text, only=make_docs.FAST) == text, f"{name} is out of date: run make docs"
    if name == "docs/configs.md":
        from bncli import studies

        for study in studies.names():
            for field in studies.get(study).CONFIG.FIELDS:
                assert f"| `{field}` |" in text, (study, field)
