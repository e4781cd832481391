"""Fixtures only; shared helpers live in helpers.py."""

import os

import pytest

os.environ.setdefault("COLUMNS", "140")  # rich tables in CliRunner output: wide enough to read


@pytest.fixture
def cli(tmp_path):
    """Invoke bncli in-process; results go under tmp_path/results unless --out is given."""
    from typer.testing import CliRunner

    from bncli import studies
    from bncli.cli import app

    runner = CliRunner()
    out = tmp_path / "results"

    def invoke(*args, out_dir=out):
        args = [str(a) for a in args]
        if args and args[0] in studies.names() and "--out" not in args:
            args += ["--out", str(out_dir)]
        return runner.invoke(app, args)

    invoke.out = out
    return invoke


@pytest.fixture
def readbacks(monkeypatch):
    """Counts of Tensor.item/.tolist/.cpu calls: each is a host sync on a GPU."""
    import torch

    calls = {"item": 0, "tolist": 0, "cpu": 0}
    for name in calls:
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            calls[_name] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls
