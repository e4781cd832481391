"""The shape of the package: one registry, no import cycles, a new study is one module."""

import ast
import re
import sys
from pathlib import Path

import pytest
import toy_study
from helpers import meta_of, sweep_file

from bncli import studies
from bncli.studies.base import MEMBERS as PROTOCOL

PKG = Path(studies.__file__).resolve().parent.parent  # bncli/


def module_name(path: Path) -> str:
    parts = ["bncli", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The bncli modules `path` imports, anywhere in it (functions too), but not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for n in ast.walk(child)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bncli":
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or ({node.module} & modules)
            if not subs or len(subs) < len(node.names):
                found |= {node.module} & modules
    return found


def test_no_import_cycle_in_bncli():
    """Every import between bncli's modules, plus the registry's imports of the study modules,
    forms a graph without cycles."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {m: imports_of(p, set(files)) - {m} for m, p in files.items()}
    graph["bncli.studies"] |= {f"bncli.studies.{mod}" for mod in studies.REGISTRY.values()}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join([*path, m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
    assert "bncli.sweeps" not in graph["bncli.ray_backend"] and "bncli.sweeps" not in graph["bncli.plot"]
    # the lowest layer knows nothing above it
    for low in ("bncli.errors", "bncli.choices", "bncli.lazy", "bncli.fields", "bncli.runtime"):
        assert graph[low] <= {"bncli.errors", "bncli.lazy"}, (low, graph[low])
    assert graph["bncli.studies.depth.engine"] >= {"bncli.studies.depth.stats", "bncli.runtime"}  # the graph is real


def test_no_module_imports_a_study_config_not_even_for_type_checking():
    """A study's config is its own: the network code, results, sweeps and plots get what they need
    from it (a frozen Net, settings) and never name the class."""
    configs = {studies.get(n).CONFIG.__name__: studies.get(n).__name__ for n in studies.names()}
    for path in PKG.rglob("*.py"):
        here = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                named = {a.name for a in node.names} & set(configs)
                assert not {c for c in named if configs[c] != here}, (here, named)


# "train" is also a mode in these modules (bn_mode train, probe --mode train), not the train study
WORDS = {
    "train": {
        "studies/depth/__init__.py",
        "studies/depth/components.py",
        "studies/depth/theory.py",
        "studies/probe/engine.py",
        "studies/probe/__init__.py",
    }
}


def test_a_study_name_appears_only_in_its_module_the_registry_and_its_command():
    for name, mod in studies.REGISTRY.items():
        where = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if re.search(rf'"{name}"', p.read_text())}
        where -= WORDS.get(name, set())
        assert where <= {"studies/__init__.py", f"studies/{mod}.py", f"studies/{mod}/__init__.py"}, (name, where)


@pytest.mark.parametrize("name", studies.names())
def test_every_study_declares_the_protocol(name):
    mod = studies.get(name)
    assert [a for a in PROTOCOL if not hasattr(mod, a)] == []
    assert mod.NAME == name
    assert mod.ID_COLUMNS == mod.COLUMNS[: len(mod.ID_COLUMNS)]  # a table's rows start with what names them
    assert mod.CONFIG().settings()  # defaults are valid


def test_a_study_module_lacking_part_of_the_protocol_is_refused(monkeypatch):
    import types

    lacking = types.ModuleType("bncli.studies.lacking")
    for member in PROTOCOL:
        if member not in ("draw", "SUMMARY"):
            setattr(lacking, member, getattr(toy_study, member))
    monkeypatch.setitem(sys.modules, "bncli.studies.lacking", lacking)
    monkeypatch.setitem(studies.REGISTRY, "lacking", "lacking")
    with pytest.raises(TypeError, match="bncli.studies.lacking lacks SUMMARY, draw"):
        studies.get("lacking")


@pytest.fixture
def toy(monkeypatch):
    """tests/toy_study.py registered as bncli's study `toy`: one module, one registry line."""
    monkeypatch.setitem(sys.modules, "bncli.studies.toy", toy_study)
    monkeypatch.setitem(studies.REGISTRY, "toy", "toy")
    return toy_study


def test_a_new_study_is_one_module_and_one_registry_line(toy, cli, tmp_path):
    import bncli

    # the Python API
    r = bncli.toy(steps=4, width=32, device="cpu")
    assert r.status == "ok" and len(r.table) == 4 and r.table["std"].between(1.5, 2.5).all()
    # a command of its own, built from its config, with the CLI's one-line errors
    assert "toy" in cli("--help").output
    done = cli("toy", "--steps", 2, "--scale", 3, "--name", "t")
    assert done.exit_code == 0, done.output
    assert meta_of(cli.out / "toy" / "t")["status"] == "ok" and (cli.out / "toy" / "t" / "toy.csv").exists()
    bad = cli("toy", "--scale", -1)
    assert bad.exit_code == 2 and bad.output.startswith("Error: --scale: Input should be greater than 0")
    # show, sweeps and plots
    shown = cli("show", cli.out / "toy" / "t")
    assert shown.exit_code == 0 and "status: ok" in shown.output
    path = sweep_file(tmp_path, study="toy", grid={"scale": [1.0, 4.0]}, seeds=[0, 1])
    swept = cli("sweep", path, "--out", tmp_path / "sw", "--no-progress")
    assert swept.exit_code == 0, swept.output
    assert "mean std" in swept.output and (tmp_path / "sw" / "sweeps" / "s" / "toy.png").exists()
