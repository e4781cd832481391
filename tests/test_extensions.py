"""Each kind of thing bncli is extended with, added in its one place and run through the command
line and a sweep: a norm, an init and a statistic (one record each, tests/extensions.py), an
architecture (one module and one ARCHS line, tests/tied_arch.py). A study is one module and one
REGISTRY line: tests/toy_study.py, run the same way by tests/test_architecture.py."""

import math
import sys

import numpy as np
import pandas as pd
import pytest
import tied_arch
import torch
from extensions import KEPT, PIXELNORM, SPARSE, SQ_MEAN
from helpers import load, make_input, make_weight

import bncli
from bncli.studies.depth import stats
from bncli.studies.depth.components import INITS, NORMS
from bncli.studies.depth.net import ARCHS

SMALL = ["--depth", 6, "--width", 24, "--batch-size", 8, "--dtype", "float64", "--device", "cpu"]


@pytest.fixture
def extended(monkeypatch):
    """The four registered as a researcher's code would: a record, a record, a record, a line."""
    NORMS.register(PIXELNORM)
    INITS.register(SPARSE)
    monkeypatch.setattr(stats, "STATS", [*stats.STATS, SQ_MEAN])
    monkeypatch.setitem(ARCHS, "tied", tied_arch.HELP)
    monkeypatch.setitem(sys.modules, "bncli.studies.depth.tied", tied_arch)
    yield
    NORMS.unregister(PIXELNORM.name)
    INITS.unregister(SPARSE.name)


def swept(cli, tmp_path, *args):
    r = cli(
        "sweep",
        "--study",
        "depth-study",
        "--set",
        "depth=6",
        "--set",
        "width=24",
        "--set",
        "device=cpu",
        *args,
        "--out",
        tmp_path / "sw",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    return r, next((tmp_path / "sw" / "sweeps").iterdir())


def test_a_new_norm_is_one_record(extended, cli, tmp_path):
    r = cli("depth-study", "--norm", "pixelnorm", *SMALL, "--name", "pn")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(cli.out / "depth-study" / "pn" / "layers.csv")
    cfg = load("depth-study", norm="pixelnorm", depth=6, width=24, batch_size=8, dtype="float64", device="cpu")
    x = make_input(cfg)
    for i in range(6):  # the same stack written out: Linear -> x / rms over the features -> ReLU
        z = x @ make_weight(cfg, i).T
        x = torch.relu(z / (z.square().mean(1, keepdim=True) + 1e-8).sqrt())
        assert table["std"][i] == pytest.approx(x.std().item(), rel=1e-10)
    rms = bncli.depth_study(norm="rmsnorm", depth=6, width=24, batch_size=8, dtype="float64", device="cpu")
    assert table["theory_std"].tolist() == rms.table["theory_std"].tolist()  # its theory: rmsnorm's
    out, d = swept(cli, tmp_path, "--grid", "norm=rmsnorm,pixelnorm")
    assert sorted(p.name for p in (d / "runs").iterdir()) == ["norm=pixelnorm,seed=0", "norm=rmsnorm,seed=0"]
    assert "did you mean 'pixelnorm'" in cli("depth-study", "--norm", "pixelnrom").output


def test_a_new_init_is_one_record(extended, cli, tmp_path):
    n = 256
    w = make_weight(load("depth-study", init="sparse", width=n, device="cpu"), 0)
    p, var = KEPT, 2 / n  # relu's He variance
    # tolerances: 5 sampling sds of a share over n^2 entries, and of a sample variance whose
    # entries have fourth moment 3 var^2 / p
    assert (w == 0).float().mean().item() == pytest.approx(1 - p, abs=5 * math.sqrt(p * (1 - p) / n**2))
    assert w.var().item() == pytest.approx(var, rel=5 * math.sqrt((3 / p - 1) / n**2))
    r = cli("depth-study", "--init", "sparse", "--norm", "none", *SMALL, "--name", "sp")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(cli.out / "depth-study" / "sp" / "layers.csv")
    kaiming = bncli.depth_study(norm="none", depth=6, width=24, batch_size=8, dtype="float64", device="cpu")
    assert table["theory_std"].tolist() == kaiming.table["theory_std"].tolist()  # the same variance
    swept(cli, tmp_path, "--grid", "init=kaiming,sparse")


def test_a_new_statistic_is_one_record(extended, cli, tmp_path):
    r = cli("depth-study", *SMALL, "--name", "s")
    assert r.exit_code == 0 and "sq_mean" in r.output, r.output
    table = pd.read_csv(cli.out / "depth-study" / "s" / "layers.csv")
    assert list(table.columns)[-2:] == ["theory_std", "sq_mean"]
    np.testing.assert_allclose(table["sq_mean"], table["chan_sq_mean"] + table["chan_var"], rtol=1e-12)
    _, d = swept(cli, tmp_path, "--grid", "norm=batchnorm,none")
    agg = pd.read_csv(d / "aggregate.csv")
    assert {"sq_mean_mean", "sq_mean_sd"} <= set(agg.columns) and agg["sq_mean_mean"].notna().all()
    assert "sq_mean" in cli("show", cli.out / "depth-study" / "s").output


def test_a_new_architecture_is_one_module_and_one_registry_line(extended, cli, tmp_path):
    r = cli("depth-study", "--arch", "tied", *SMALL, "--name", "t")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(cli.out / "depth-study" / "t" / "layers.csv")
    cfg = load("depth-study", depth=6, width=24, batch_size=8, dtype="float64", device="cpu")
    w, x = make_weight(cfg, 0), make_input(cfg)
    bn = torch.nn.BatchNorm1d(24, dtype=torch.float64).train()
    with torch.no_grad():
        for i in range(6):  # one weight, every layer
            x = torch.relu(bn(x @ w.T))
            assert table["std"][i] == pytest.approx(x.std().item(), rel=1e-10)
    assert table["theory_std"].notna().all()
    _, d = swept(cli, tmp_path, "--grid", "arch=mlp,tied")
    assert len(list((d / "runs").iterdir())) == 2
    assert "'tied'" in cli("depth-study", "--arch", "tide").output  # among the choices, with a did-you-mean


def test_a_record_without_its_theory_or_help_is_refused_when_registered():
    from bncli.studies.depth.components import Registry

    with pytest.raises(TypeError, match="Norm 'half': needs a name, help and group"):
        Registry(PIXELNORM, type(PIXELNORM)("half", "a norm with no theory", build=PIXELNORM.build, group=None))
    with pytest.raises(TypeError, match="Init 'sparse' is registered twice"):
        Registry(SPARSE, SPARSE)
    with pytest.raises(TypeError, match="statistic half: a chunk statistic needs compute"):
        stats.Stat("half", "chunk", "no way to compute it")
