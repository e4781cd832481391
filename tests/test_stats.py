"""Depth-study statistics and options against independent computations: torch.nn modules,
torch.autograd, numpy's SVD, simulation averaged over seeds, and analytic values."""

import math

import numpy as np
import pytest
import torch
from helpers import CPU, load, make_input, make_weight, reference, run_depth, table_rows

from bncli import report
from bncli.studies.depth import stats
from bncli.studies.depth.net import Net
from bncli.studies.depth.net import make_cotangent as _cotangent


def make_cotangent(cfg, device):
    return _cotangent(Net.of(cfg), device, tuple(make_input(cfg).shape))


run = run_depth  # (cfg, Result) on the CPU


NORMS = {
    "batchnorm": lambda c: torch.nn.BatchNorm1d(c.width, dtype=torch.float64).train(),
    "batchnorm-eval": lambda c: torch.nn.BatchNorm1d(c.width, dtype=torch.float64).eval(),
    "layernorm": lambda c: torch.nn.LayerNorm(c.width, dtype=torch.float64),
    "groupnorm": lambda c: torch.nn.GroupNorm(c.groups, c.width, dtype=torch.float64),
    "rmsnorm": lambda c: torch.nn.RMSNorm(c.width, dtype=torch.float64),
    "none": lambda c: torch.nn.Identity(),
}
ACTS = {
    "gelu": torch.nn.GELU(),
    "silu": torch.nn.SiLU(),
    "leaky_relu": torch.nn.LeakyReLU(0.2),
    "relu": torch.nn.ReLU(),
    "tanh": torch.nn.Tanh(),
}


def cfg_for(norm: str, **kw):
    if norm == "batchnorm-eval":
        return {"norm": "batchnorm", "bn_mode": "eval", **kw}
    if norm == "groupnorm":
        return {"norm": "groupnorm", "groups": 4, **kw}
    return {"norm": norm, **kw}


@pytest.mark.parametrize("norm", ["batchnorm-eval", "groupnorm", "rmsnorm", "batchnorm"])
@pytest.mark.parametrize("act", ["gelu", "silu", "leaky_relu"])
@pytest.mark.parametrize("order", ["linear-norm-act", "linear-act-norm"])
def test_new_norms_activations_and_order_match_nn_modules(norm, act, order):
    kw = cfg_for(
        norm, depth=6, width=32, batch_size=8, activation=act, order=order, dtype="float64", negative_slope=0.2
    )
    cfg, res = run(**kw)
    outs, _ = reference(cfg, NORMS[norm], ACTS[act])
    assert res.table["std"].tolist() == pytest.approx([o.std().item() for o in outs], rel=1e-10)
    assert res.table["mean"].tolist() == pytest.approx([o.mean().item() for o in outs], rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("norm", ["batchnorm", "none", "layernorm"])
def test_residual_stack_matches_nn_modules(norm):
    cfg, res = run(depth=8, width=32, batch_size=8, norm=norm, residual=0.3, dtype="float64")
    outs, _ = reference(cfg, NORMS[norm], ACTS["relu"])
    assert res.table["std"].tolist() == pytest.approx([o.std().item() for o in outs], rel=1e-10)


def test_eval_mode_batchnorm_is_almost_the_identity():
    # the pitfall: running stats are 0 and 1 at init, so eval BN only divides by sqrt(1 + eps)
    # and a normal(1) init explodes exactly as without any norm
    _, ev = run(depth=10, width=64, init="normal", bn_mode="eval", dtype="float64")
    _, none = run(depth=10, width=64, init="normal", norm="none", dtype="float64")
    ratio = (ev.table["std"] / none.table["std"]).to_numpy()
    assert ratio == pytest.approx([(1 + 1e-5) ** (-(i + 1) / 2) for i in range(10)], rel=1e-9)
    _, train = run(depth=10, width=64, init="normal", dtype="float64")
    assert train.table["std"].max() < 1 < 1e6 < ev.table["std"].iloc[-1]


def test_groupnorm_groups_must_divide_width():
    from bncli.errors import BncliError

    with pytest.raises(BncliError, match="groups must divide width .* width 40 is not a multiple of groups 32"):
        load("depth-study", None, norm="groupnorm", width=40)
    load("depth-study", None, norm="layernorm", width=40)  # only groupnorm cares


# --- inits -----------------------------------------------------------------------------


def weight(**kw):
    return make_weight(load("depth-study", None, width=400, device="cpu", **kw), 0, CPU)


def test_trunc_normal_is_cut_at_two_std():
    w = weight(init="trunc_normal", init_std=0.5)
    assert w.abs().max() <= 1.0 and w.abs().max() > 0.99
    # variance of N(0, s^2) kept within +-2s: s^2 (1 - 2 a phi(a) / (2 Phi(a) - 1)), a = 2
    phi, mass = math.exp(-2) / math.sqrt(2 * math.pi), math.erf(2 / math.sqrt(2))
    assert w.var().item() == pytest.approx(0.25 * (1 - 4 * phi / mass), rel=0.02)


@pytest.mark.parametrize("init", ["lecun_normal", "xavier", "xavier_uniform", "orthogonal"])
def test_init_gain_scales_the_variance(init):
    assert weight(init=init, init_gain=3.0).var().item() == pytest.approx(9 / 400, rel=0.02)


def test_orthogonal_with_gain_is_gain_times_orthogonal():
    w = weight(init="orthogonal", init_gain=2.0).double()
    assert torch.allclose(w @ w.T, 4 * torch.eye(400, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("slope", [0.01, 0.3])
def test_kaiming_uses_leaky_relus_gain(slope):
    gain = torch.nn.init.calculate_gain("leaky_relu", slope)
    w = weight(init="kaiming", activation="leaky_relu", negative_slope=slope)
    assert w.var().item() == pytest.approx(gain**2 / 400, rel=0.02)


@pytest.mark.parametrize("act,fn", [("gelu", torch.nn.functional.gelu), ("silu", torch.nn.functional.silu)])
@pytest.mark.parametrize("init", ["kaiming", "kaiming_uniform"])
def test_kaiming_gain_for_gelu_and_silu_keeps_the_second_moment(act, fn, init):
    # He et al.'s rule: fan_in * Var(w) * E[act(Z)^2] = 1; E by Monte Carlo here
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = weight(init=init, activation=act)
    assert 400 * w.var().item() * fn(z).square().mean().item() == pytest.approx(1, rel=0.02)


def test_existing_activations_keep_relu_gain():
    for act in ("relu", "tanh", "linear"):
        assert torch.equal(weight(activation=act), weight())


# --- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("norm,extra", [("batchnorm", {}), ("layernorm", {"residual": 0.5}), ("none", {})])
def test_grads_match_autograd_on_nn_modules(norm, extra):
    cfg, res = run(depth=8, width=24, batch_size=6, norm=norm, grads=True, dtype="float64", **extra)
    outs, lins = reference(cfg, NORMS[norm], ACTS["relu"], grads=True)
    (outs[-1] * make_cotangent(cfg, CPU)).sum().backward()
    assert res.table["grad_std"].tolist() == pytest.approx([o.grad.std().item() for o in outs], rel=1e-9)
    assert res.table["weight_grad_norm"].tolist() == pytest.approx(
        [torch.linalg.matrix_norm(lin.weight.grad).item() for lin in lins], rel=1e-9
    )


def test_cotangent_is_seeded_n01():
    cfg = load("depth-study", None, width=256, batch_size=64, device="cpu")
    ct = make_cotangent(cfg, CPU)
    assert torch.equal(ct, make_cotangent(cfg, CPU)) and not torch.equal(ct, make_input(cfg, CPU))
    assert ct.mean().item() == pytest.approx(0, abs=0.02) and ct.std().item() == pytest.approx(1, abs=0.02)


def test_grads_do_not_change_the_forward_numbers():
    _, off = run(depth=30, width=32)
    _, on = run(depth=30, width=32, grads=True, erank=True)
    cols = [s.name for s in stats.STATS if s.kind == "chunk"] + ["theory_std"]
    assert off.table[cols].to_csv() == on.table[cols].to_csv()


def test_grads_of_a_diverged_run_start_at_the_last_finite_layer():
    _, res = run(init="normal", norm="none", width=64, grads=True)
    assert res.status == "diverged"
    g = res.table["grad_std"]
    assert not g.iloc[:-1].isna().any() and math.isnan(g.iloc[-1])  # earlier ones may overflow: inf
    assert g.iloc[-2] == pytest.approx(1, rel=0.05)  # the cotangent itself: N(0, 1)
    assert g.iloc[-3] > 4  # one W^T of std 1 at width 64 multiplies it by about sqrt(64 / 2)


def test_grads_and_erank_read_back_twice_at_most(readbacks):
    _, res = run(depth=100, width=16, grads=True, erank=True, batch_size=2)  # B < 4: no MC rate
    assert len(res.table) == 100
    assert readbacks["item"] + readbacks["tolist"] == 0 and readbacks["cpu"] == 2


def lam_bn_relu(b: int, n: int = 400_000) -> float:
    """Squared-gradient growth per layer of Linear-BN-ReLU at batch b (docs/theory.md), by MC."""
    rng = np.random.default_rng(7)
    u = rng.standard_normal((n, b))
    u -= u.mean(1, keepdims=True)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pos = np.maximum(u, 0)
    k = (u > 0).sum(1)
    a = ((pos**2).sum(1) - pos.sum(1) ** 2 / b).mean()
    return (b - 1) / ((b - 3) * a) * (0.5 - (k * (b - k)).mean() / (b * b * (b - 1))) - 1 / (b - 3)


def grad_growth(**kw):
    rates = []
    for seed in (0, 1):
        _, res = run(grads=True, seed=seed, **kw)
        rates.append(report.growth(res.table["grad_std"], backwards=True))
    return float(np.mean(rates))


def test_bn_relu_gradients_explode_at_the_mean_field_rate():
    # Yang et al. 2019: the gradient norm grows going backwards, by sqrt(pi / (pi - 1)) = 1.211
    # per layer as B -> inf and faster at small batches; tolerance 1.5% (docs/theory.md)
    small = grad_growth(depth=30, width=512, batch_size=16)
    large = grad_growth(depth=20, width=512, batch_size=256)
    assert small == pytest.approx(math.sqrt(lam_bn_relu(16)), rel=0.015)
    assert math.sqrt(lam_bn_relu(16)) == pytest.approx(1.2604, abs=0.002)
    assert large == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), rel=0.015)
    assert small > 1.02 * large


# --- effective rank ------------------------------------------------------------------------


def test_erank_matches_numpy_svd():
    cfg, res = run(depth=5, width=32, batch_size=8, norm="none", erank=True, dtype="float64")
    outs, _ = reference(cfg, NORMS["none"], ACTS["relu"])
    for o, got in zip(outs, res.table["erank"], strict=True):
        s = np.linalg.svd(o.detach().numpy(), compute_uv=False)
        p = s / s.sum()
        p = p[p > 0]
        assert got == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-8)


def test_erank_of_rank_one_and_identity():
    assert stats.erank(torch.eye(8)).item() == pytest.approx(8)
    assert stats.erank(torch.ones(8, 8)).item() == pytest.approx(1)
    assert stats.erank(torch.zeros(8, 8)).item() == 0
    assert math.isnan(stats.erank(torch.full((8, 8), float("inf"))).item())


def test_batchnorm_keeps_rank_relu_stacks_collapse():
    # Daneshmand et al. 2020: with BN the rank stays near the batch size; without, it falls to ~1
    _, bn = run(depth=50, width=64, batch_size=16, erank=True)
    _, plain = run(depth=50, width=64, batch_size=16, erank=True, norm="none")
    assert bn.table["erank"].iloc[-10:].min() > 0.75 * 16
    assert plain.table["erank"].iloc[-1] < 4 < 0.75 * 16 < plain.table["erank"].iloc[0]


# --- theory_std against simulation ---------------------------------------------------------

THEORY = [
    {"norm": "none", "width": 1024, "depth": 4},  # weight noise: log-normal, ~ depth / width
    {"norm": "none", "activation": "linear", "init": "xavier"},
    {"norm": "none", "activation": "tanh", "init": "xavier"},
    {"norm": "none", "activation": "tanh", "init": "normal", "init_std": 0.1},
    {"norm": "none", "activation": "leaky_relu", "negative_slope": 0.2, "init": "trunc_normal", "init_std": 0.05},
    {},  # batchnorm, relu
    {"batch_size": 4},
    {"activation": "tanh"},
    {"norm": "layernorm", "activation": "tanh", "width": 16, "batch_size": 128},
    {"norm": "layernorm"},
    {"norm": "groupnorm", "groups": 64, "activation": "gelu"},
    {"norm": "rmsnorm", "activation": "silu"},
    {"order": "linear-act-norm", "norm": "rmsnorm"},
    {"residual": 0.5},
    {"residual": 0.3, "norm": "none", "activation": "tanh", "init": "xavier"},
    {"bn_mode": "eval", "init": "orthogonal"},
]


@pytest.mark.parametrize("kw", THEORY, ids=[",".join(f"{k}={v}" for k, v in d.items()) or "bn-relu" for d in THEORY])
def test_theory_std_matches_simulation_over_seeds(kw):
    # tolerance (docs/theory.md): 4 standard errors of the seed mean plus 2% for the O(1/width)
    # and O(batch/width) terms that mean field drops; compared on std^2, which it predicts.
    # Over 32 seeds a 4-sem miss has probability ~4e-4 per layer (t, 31 dof) on any random
    # stream. The weight noise makes std^2 vary by about sqrt(2 depth / width) ~ 20% between
    # seeds, so the sem is ~4% of theory and the band ~15%: asking for under 25% keeps the
    # check from being vacuous whatever the stream, while a wrong prediction still fails it.
    kw = {"depth": 6, "width": 256, "batch_size": 16, **kw}
    runs = [run(seed=s, **kw)[1].table for s in range(32)]
    sq = np.array([t["std"].to_numpy() ** 2 for t in runs])
    theory = runs[0]["theory_std"].to_numpy() ** 2
    mean, sem = sq.mean(0), sq.std(0, ddof=1) / math.sqrt(len(sq))
    band = 4 * sem + 0.02 * theory
    assert (np.abs(mean - theory) <= band).all(), (mean, sem, theory)
    assert (band < 0.25 * theory).all(), band / theory  # and the check is not vacuous


def test_theory_std_closed_forms():
    cfg, res = run(depth=3, width=64, norm="none", init="normal", init_std=0.25, activation="linear")
    # linear: std_l = (sqrt(n) sigma)^(l + 1)
    assert res.table["theory_std"].tolist() == pytest.approx([2.0, 4.0, 8.0])
    _, res = run(depth=3, width=64, norm="none", init="normal", init_std=0.25)
    # relu: q_l = r q_(l-1), r = n sigma^2 / 2 = 2; std = sqrt(v (pi - 1) / (2 pi)), v = n sigma^2 q
    v = np.array([4.0, 8.0, 16.0])
    assert res.table["theory_std"].to_numpy() == pytest.approx(np.sqrt(v * (math.pi - 1) / (2 * math.pi)))
    _, res = run(depth=2, width=64, batch_size=100_000)
    # BN-ReLU as B -> inf: relu of a standard normal
    assert res.table["theory_std"].tolist() == pytest.approx([math.sqrt((math.pi - 1) / (2 * math.pi))] * 2, rel=1e-4)


def test_cli_grads_erank_columns_summary_and_plots(cli):
    r = cli("depth-study", "--depth", 12, "--width", 32, "--grads", "--erank", "--name", "g")
    assert r.exit_code == 0, r.output
    header = table_rows(r.output)[0]
    assert "erank" in header and "grad_std" in header and "theory_std" in header
    assert "std growth per layer: x" in r.output
    assert "grad_std growth per layer, going backwards: x" in r.output
    from bncli.studies.depth import theory

    # the finite-batch rate is bncli's own formula; only the large-batch limit is Yang et al.'s
    said = (
        f"(mean field: x{theory.bn_relu_grad_rate(16):.4f} at batch 16, bncli's finite-batch formula; "
        f"x{math.sqrt(math.pi / (math.pi - 1)):.4f} as the batch grows, Yang et al. 2019)"
    )
    assert said in " ".join(r.output.split())
    run_dir = cli.out / "depth-study" / "g"
    import pandas as pd

    t = pd.read_csv(run_dir / "layers.csv")
    assert t[["erank", "grad_std", "weight_grad_norm"]].notna().all().all()
    for metric in ("chan_sq_mean", "chan_var", "erank", "grad_std", "weight_grad_norm", "theory_std"):
        r = cli("plot", run_dir, "--metric", metric)
        assert r.exit_code == 0, r.output
        assert (run_dir / f"{metric}_by_layer.png").stat().st_size > 5_000
