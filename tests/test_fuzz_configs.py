"""Property-based tests of every config loader and the sweep file, with hypothesis.

Whatever a YAML file holds (arbitrary mappings, wrong types, huge or negative numbers, NaN and
inf, empty files, non-mapping documents, unicode and non-string keys, nested structures,
aliases, python tags, broken syntax), `bncli STUDY --config FILE` either runs (exit 0) or
refuses with exactly one line `Error: ...` and exit code 2: never a traceback, never a run
directory. Generated sizes are either tiny (so valid examples run in milliseconds) or far too
large (so they must be refused before anything is allocated).

The profile is derandomized: the same examples every run, so a failure here is reproducible.
"""

import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import CONFIGS, load
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bncli.cli import app
from bncli.errors import BncliError, RunError

settings.register_profile(
    "bncli-fuzz",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("bncli-fuzz")

# probe's MODEL is code (a file, a module, a package's model): fuzzed values would build arbitrary models, so
# its fields' checks are tested by name in tests/test_probe.py instead
# train runs a whole training per valid example (minutes for the property tests on 2 cores): its fields'
# checks are tested by name in tests/test_train.py
NOT_FUZZED = {"probe", "train"}
STUDIES = sorted(set(CONFIGS) - NOT_FUZZED)
COMMAND = {"depth-study": ["depth-study"], "running-stats": ["running-stats"], "convergence": ["convergence"]}
# under every generated file: keeps valid examples tiny (generated keys override these)
SMALL = {"depth-study": {"depth": 3, "width": 8, "batch_size": 4}, "convergence": {"iterations": 3, "batch_size": 4}}
CSV = {"depth-study": "layers.csv", "running-stats": "running_stats.csv", "convergence": "convergence.csv"}


def test_every_study_is_fuzzed():
    assert set(COMMAND) | NOT_FUZZED == set(CONFIGS) and set(COMMAND) == set(CSV)


# -- strategies ---------------------------------------------------------------------------------

WORDS = sorted(
    {str(w) for cls in CONFIGS.values() for f in cls.FIELDS.values() for w in f.words() or []}
    | {
        "none",
        "null",
        "None",
        "auto",
        "cpu",
        "cuda",
        "cuda:0",
        "cuda:1",
        "2,2",
        "1,2,3",
        "0.3",
        "1e-5",
        "yes",
        "no",
        "on",
        "off",
        "",
    }
)
ints = st.one_of(
    st.integers(1, 6),  # valid and cheap
    st.integers(-3, 0),
    st.sampled_from([2**31, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63), 10**100]),  # int64 edges, overflow
    st.integers(2**40, 2**200),  # far too large for any device
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.1, 0.5, 1.0, 1e-300, 5e-324, 1e308, math.nan, math.inf, -math.inf]),
)
text = st.one_of(st.sampled_from(WORDS), st.text(max_size=16))
scalars = st.one_of(ints, floats, text, st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(text, ints), inner, max_size=3)),
    max_leaves=12,
)
keys_of = {
    study: st.one_of(
        st.sampled_from(sorted(cls.FIELDS)),
        st.sampled_from(sorted(cls.FIELDS)),
        text,
        ints,
        st.booleans(),
        st.none(),
        floats,
    )
    for study, cls in CONFIGS.items()
}

SPECIAL = [  # documents yaml.safe_dump never writes
    "",
    "---\n",
    "~\n",
    "[\n",
    "{\n",
    "depth: *nowhere\n",
    "&a [*a]\n",
    "a: &a {b: *a}\n",
    "\tdepth: 3\n",
    "\ufeffdepth: 3\n",
    "%YAML 1.1\n---\ndepth: 3\n",
    "depth: 3\n---\ndepth: 4\n",
    "depth: 3\ndepth: 4\n",
    "? [1, 2]\n: 3\n",
    "? {a: 1}\n: 3\n",
    "depth: 0x" + "f" * 5000 + "\n",
    "depth: " + "9" * 5000 + "\n",
    "depth: " + "[" * 3000 + "]" * 3000 + "\n",
    "seed: 1_000\n",
    "momentum: .NaN\n",
    "eps: -.inf\n",
    "dims: !!float 2\n",
    "feature_shape: '" + "2," * 10000 + "'\n",
    "depth: !!binary aGVsbG8=\n",
    "depth: 2001-12-14\n",
    "seed: !!python/object/apply:os.getpid []\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "feature_shape: *f\ndepth: *f\nwidth: *f\n",  # a billion laughs in the error message
    '"\\ud800": 1\n',
    '"\\x1b[2J\\x1b[31m": 1\n',
    '"": 1\n',
    "null: 1\n",
    "1: 1\n",
    "? 0x" + "f" * 5000 + "\n: 1\n",
]
HUGE = "0x" + "f" * 5000  # an int over Python's 4300-digit str() limit: safe_dump cannot write one
SPECIAL_SWEEP = [
    f"study: depth-study\n{line}\n"
    for line in [
        f"grid: {{depth: [{HUGE}]}}",
        f"seeds: [{HUGE}]",
        f"name: {HUGE}",
        f"base: {{depth: {HUGE}}}",
        f"grid:\n  ? {HUGE}\n  : [1]",
        "grid: {depth: [[1, [2, [3]]]]}",
        "grid: {init: [kaiming, kaiming]}",
        "seeds: [1, 1.0, true]",
        "grid: {depth: []}",
        "seeds: []",
        "grid: {'': [1]}",
        "base: {seed: 1}",
        "grid: {seed: [1, 2]}",
        "name: ../escape",
        'name: "\\ud800"',
        "grid: {depth: ['" + "x" * 300 + "']}",
    ]
] + [f"study: {HUGE}\n", "study: [depth-study]\n", "study: {a: 1}\n", "study: null\n"]


@st.composite
def documents(draw, study):
    """The text of a config file: mostly a YAML mapping over the study's fields, sometimes not."""
    kind = draw(st.sampled_from(["mapping"] * 6 + ["other", "special", "garbage"]))
    if kind == "special":
        return draw(st.sampled_from(SPECIAL))
    if kind == "garbage":
        return draw(st.text(max_size=60))
    if kind == "other":
        doc = draw(st.one_of(values, st.lists(values, max_size=3)))
    else:
        doc = {**SMALL.get(study, {}), **draw(st.dictionaries(keys_of[study], values, max_size=6))}
    event(kind)
    return yaml.safe_dump(
        doc, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.sampled_from([False, True, None]))
    )


# -- the property -------------------------------------------------------------------------------


def check_outcome(r, out: Path, study: str, what: str, note=event):
    assert r.exception is None or isinstance(r.exception, SystemExit), (what, repr(r.exception), r.output)
    assert "Traceback" not in r.output, r.output
    made = sorted(p.parent for p in out.rglob("meta.json")) if out.exists() else []
    if r.exit_code == 0:
        note("valid: ran")
        assert len(made) == 1, made
        status = json.loads((made[0] / "meta.json").read_text())["status"]
        assert status in ("ok", "diverged") and (made[0] / CSV[study]).exists(), status
        return
    note("refused")
    assert r.exit_code == 2, (what, r.exit_code, r.output)
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), (what, r.output)
    assert lines[0].isprintable(), ascii(lines[0])  # no terminal escapes from a hostile file
    assert made == [] and not out.exists(), made  # never a run directory on error


def _invoke(args, text: str):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.yaml"
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
        out = Path(tmp) / "out"
        r = CliRunner().invoke(app, [*args, str(f), "--out", str(out)])
        yield r, out


@pytest.mark.parametrize("study", STUDIES)
@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_any_config_file_runs_or_is_one_clean_line(study, data):
    text = data.draw(documents(study), label="config file")
    for r, out in _invoke([*COMMAND[study], "--config"], text):
        check_outcome(r, out, study, text[:300])


@settings(FUZZ, max_examples=300)
@given(st.sampled_from(STUDIES).flatmap(lambda s: st.tuples(st.just(s), documents(s))))
def test_load_gives_a_config_that_round_trips_or_one_line(study_text):
    """config.load directly, many more examples: a valid config saved as config.yaml loads back equal."""
    study, text = study_text
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.yaml"
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            cfg = load(study, f)
        except BncliError as e:
            msg = str(e)
            assert msg and len(msg) < 3000, len(msg)
            assert "Traceback" not in msg
            return
        assert isinstance(cfg, CONFIGS[study])
        f.write_text(cfg.to_yaml(), encoding="utf-8")  # what a run saves as config.yaml
        assert load(study, f) == cfg


# -- the sweep file -----------------------------------------------------------------------------

SWEEP_KEYS = ["study", "name", "base", "grid", "seeds"]


@st.composite
def sweep_documents(draw):
    kind = draw(st.sampled_from(["sweep"] * 5 + ["other", "special", "special sweep"]))
    event(f"sweep file: {kind}")
    if kind == "special":
        return draw(st.sampled_from(SPECIAL))
    if kind == "special sweep":
        return draw(st.sampled_from(SPECIAL_SWEEP))
    if kind == "other":
        return yaml.safe_dump(draw(st.one_of(values, st.lists(values, max_size=3))))
    study = draw(st.sampled_from(STUDIES))
    fields = st.sampled_from(sorted(CONFIGS[study].FIELDS))
    base = draw(st.one_of(st.dictionaries(st.one_of(fields, text, ints), values, max_size=4), values))
    if isinstance(base, dict):
        base = {**SMALL.get(study, {}), **base}
    doc = {
        "study": draw(st.one_of(st.sampled_from(STUDIES), scalars)),
        "base": base,
        "grid": draw(
            st.one_of(
                st.dictionaries(
                    st.one_of(fields, text, ints),
                    st.one_of(st.lists(values, min_size=1, max_size=2), values),
                    max_size=2,
                ),
                values,
            )
        ),
        "seeds": draw(st.one_of(st.lists(ints, min_size=1, max_size=2), values)),
        "name": draw(st.one_of(st.just("fz"), text, scalars)),
    }
    keep = draw(st.lists(st.sampled_from(SWEEP_KEYS), unique=True))
    doc = {k: doc[k] for k in ["study", *keep]}
    doc.update(draw(st.dictionaries(st.one_of(text, ints, st.none()), values, max_size=2)))
    return yaml.safe_dump(doc, allow_unicode=True)


def check_sweep(text: str, note=event):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "fz.yaml"
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
        out = Path(tmp) / "out"
        r = CliRunner().invoke(app, ["sweep", str(f), "--out", str(out), "--no-progress"])
        assert r.exception is None or isinstance(r.exception, SystemExit), (text[:300], repr(r.exception))
        assert "Traceback" not in r.output
        if r.exit_code == 0:
            note("sweep: ran")
            assert (out / "sweeps").exists() and list(out.rglob("summary.csv"))
            return
        note("sweep: refused")
        assert r.exit_code == 2, (text[:300], r.exit_code, r.output)
        lines = r.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (text[:300], r.output)
        assert lines[0].isprintable(), ascii(lines[0])
        assert not out.exists()


@settings(FUZZ, max_examples=30)
@given(sweep_documents())
def test_any_sweep_file_runs_or_is_one_clean_line(text):
    check_sweep(text)


# every hand-written hostile document, each time (hypothesis only samples them)


@pytest.mark.parametrize("text", SPECIAL, ids=[ascii(t)[:40] for t in SPECIAL])
@pytest.mark.parametrize("study", STUDIES)
def test_hostile_config_files(study, text):
    for r, out in _invoke([*COMMAND[study], "--config"], text):
        check_outcome(r, out, study, text[:300], note=print)


@pytest.mark.parametrize("text", SPECIAL + SPECIAL_SWEEP, ids=[ascii(t)[:40] for t in SPECIAL + SPECIAL_SWEEP])
def test_hostile_sweep_files(text):
    check_sweep(text, note=print)


def test_a_valid_example_really_runs():
    """The property is not vacuous: the generators reach valid configs that run."""
    for study in STUDIES:
        text = yaml.safe_dump(SMALL.get(study, {}) or {"seed": 1})
        for r, out in _invoke([*COMMAND[study], "--config"], text):
            assert r.exit_code == 0, r.output
            check_outcome(r, out, study, text, note=print)


# -- every number a field can hold, in a tiny study ---------------------------------------------

TINY = {
    "depth-study": {"depth": 3, "width": 8, "batch_size": 4},
    "running-stats": {"iterations": 2},
    "convergence": {"iterations": 3, "batch_size": 4},
}
NUMERIC = {
    "depth-study": ["init_std", "init_gain", "negative_slope", "residual"],
    "running-stats": ["momentum", "eps"],
    "convergence": ["eps", "input_mean", "input_std", "momentum", "keras_momentum"],
}
any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e-38, 1.0, 3.4e38, 1e200, 1.7976931348623157e308]),
)


def test_every_numeric_field_is_fuzzed():
    assert set(NUMERIC) | NOT_FUZZED == set(CONFIGS)
    assert all(set(f) <= set(CONFIGS[s].FIELDS) for s, f in NUMERIC.items())


@pytest.mark.parametrize("study", STUDIES)
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_any_number_in_any_numeric_field_runs_or_is_refused(study, data):
    """Across the whole float range: a tiny study runs (ok, or diverged: overflow is a result)
    or the value is refused with BncliError. Never another exception."""
    import bncli

    field = data.draw(st.sampled_from(NUMERIC[study]), label="field")
    value = data.draw(any_float, label="value")
    if field in ("input_mean", "input_std", "momentum", "keras_momentum") and study == "convergence":
        value = [value]
    try:
        r = bncli.run(study, device="cpu", **{**TINY[study], field: value})
    except BncliError as e:
        assert not isinstance(e, RunError), (field, value, str(e))  # a run that failed is a bug
        event("refused")
        assert "\n" not in str(e)
        return
    event("ran")
    assert r.status in ("ok", "diverged"), (field, value, r.meta)
