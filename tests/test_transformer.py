"""--arch transformer: against nn.TransformerEncoderLayer and nn.MultiheadAttention with bncli's
weights copied in (float64), statistics by hand, and the results at init the papers report
(Dong et al. 2021, Xiong et al. 2020), over seeds, with tolerances from the spread over seeds."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import CPU, load, make_input, make_weight, meta_of, run_depth

import bncli
from bncli import BncliError
from bncli.studies import depth
from bncli.studies.depth import stats, theory
from bncli.studies.depth.net import Net, make_cotangent

SMALL = {"arch": "transformer", "width": 32, "tokens": 8, "heads": 4, "batch_size": 3, "dtype": "float64"}
ACTS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh}


class Rows(nn.Module):
    """A norm module applied to each token: (batch, tokens, width) as (batch x tokens, width) rows."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x.reshape(-1, x.shape[-1])).view(x.shape)


def norm_module(norm, d):
    return {
        "layernorm": lambda: nn.LayerNorm(d, bias=False, dtype=torch.float64),
        "rmsnorm": lambda: nn.RMSNorm(d, dtype=torch.float64),
        "batchnorm": lambda: Rows(nn.BatchNorm1d(d, dtype=torch.float64).train()),
        "none": nn.Identity,
    }[norm]()


def encoder_layer(cfg, i):
    """nn.TransformerEncoderLayer(bias=False) with block i's weights; alpha goes into the branches'
    last projections (alpha f(x) = f'(x) with O and W2 scaled), the norms are the config's."""
    d = cfg.width
    layer = nn.TransformerEncoderLayer(
        d, cfg.heads, cfg.mlp_ratio * d, dropout=0.0, activation=ACTS[cfg.activation], batch_first=True,
        norm_first=cfg.norm_position == "pre", bias=False, dtype=torch.float64,
    )  # fmt: skip
    q, k, v, o, w1, w2 = make_weight(cfg, i, CPU)
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(torch.cat([q, k, v]))
        layer.self_attn.out_proj.weight.copy_(cfg.residual * o)
        layer.linear1.weight.copy_(w1)
        layer.linear2.weight.copy_(cfg.residual * w2)
    layer.norm1, layer.norm2 = norm_module(cfg.norm, d), norm_module(cfg.norm, d)
    return layer.train()  # train mode (dropout 0): the plain path, no fused inference kernel


def reference(cfg):
    """Every block's output of an nn.TransformerEncoder built from the layers above."""
    mask = nn.Transformer.generate_square_subsequent_mask(cfg.tokens, dtype=torch.float64) if cfg.causal else None
    x, outs = make_input(cfg, CPU), []
    for i in range(cfg.depth):
        x = encoder_layer(cfg, i)(x, src_mask=mask, is_causal=cfg.causal)
        outs.append(x)
    return outs


def erank_by_hand(x):
    """Each sample's tokens x width matrix's effective rank, by numpy's SVD, averaged over the batch."""
    out = []
    for m in x.detach().numpy():
        s = np.linalg.svd(m, compute_uv=False)
        p = s / s.sum()
        out.append(math.exp(-(p * np.log(p)).sum()))
    return float(np.mean(out))


def token_cos_by_hand(x):
    c = F.cosine_similarity(x[:, :, None, :], x[:, None, :, :], dim=-1)  # (batch, t, u)
    t = x.shape[1]
    return ((c.sum((1, 2)) - c.diagonal(dim1=1, dim2=2).sum(1)) / (t * (t - 1))).mean().item()


@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize(
    "kw",
    [
        {"norm": "layernorm"},
        {"norm": "layernorm", "causal": True, "activation": "gelu"},
        {"norm": "layernorm", "residual": 0.5, "init": "xavier_uniform"},
        {"norm": "rmsnorm", "activation": "tanh"},
        {"norm": "batchnorm"},
        {"norm": "none", "init": "orthogonal", "mlp_ratio": 2},
    ],
)
def test_matches_nn_transformer_encoder_layers(position, kw):
    cfg, res = run_depth(depth=4, norm_position=position, erank=True, **{**SMALL, **kw})
    with torch.no_grad():
        outs = reference(cfg)
    for i, x in enumerate(outs):
        row = res.table.iloc[i]
        assert row["std"] == pytest.approx(x.std().item(), rel=1e-10)
        assert row["mean"] == pytest.approx(x.mean().item(), rel=1e-8, abs=1e-12)
        assert row["abs_max"] == pytest.approx(x.abs().max().item(), rel=1e-12)
        feature = x.reshape(-1, cfg.width)  # per token feature: over the batch's tokens
        assert row["chan_sq_mean"] == pytest.approx(feature.mean(0).square().mean().item(), rel=1e-9, abs=1e-15)
        assert row["chan_var"] == pytest.approx(feature.var(0, unbiased=False).mean().item(), rel=1e-10)
        assert row["token_cos"] == pytest.approx(token_cos_by_hand(x), rel=1e-9, abs=1e-12)
        assert row["erank"] == pytest.approx(erank_by_hand(x), rel=1e-8)
    assert list(res.table.columns) == stats.columns("transformer") and "stage" not in res.table
    assert res.off == ["grad_std", "weight_grad_norm"]


@pytest.mark.parametrize("norm,position", [("none", "pre"), ("layernorm", "pre"), ("layernorm", "post")])
def test_attention_only_without_the_skip_is_multihead_attention(norm, position):
    cfg, res = run_depth(depth=3, norm=norm, norm_position=position, residual=0, mlp_ratio=0, **SMALL)
    x = make_input(cfg, CPU)
    with torch.no_grad():
        for i in range(3):
            mha = nn.MultiheadAttention(cfg.width, cfg.heads, bias=False, batch_first=True, dtype=torch.float64)
            q, k, v, o, w1, w2 = make_weight(cfg, i, CPU)
            assert w1 is None and w2 is None
            mha.in_proj_weight.copy_(torch.cat([q, k, v]))
            mha.out_proj.weight.copy_(o)
            ln = norm_module(norm, cfg.width)
            y = ln(x) if position == "pre" else x
            x = mha(y, y, y, need_weights=False)[0]
            x = ln(x) if position == "post" else x
            assert res.table["std"][i] == pytest.approx(x.std().item(), rel=1e-10)


def test_gradients_match_autograd_through_nn_modules():
    """Pre-LN: the cotangent meets the final norm's output (nn.TransformerEncoder's `norm`);
    post-LN: the last block's output, already normalised."""
    for position in ("pre", "post"):
        cfg, res = run_depth(depth=3, norm="layernorm", norm_position=position, grads=True, **SMALL)
        layers = [encoder_layer(cfg, i) for i in range(3)]
        final = nn.LayerNorm(cfg.width, bias=False, dtype=torch.float64) if position == "pre" else nn.Identity()
        x, outs = make_input(cfg, CPU), []
        for layer in layers:
            x = layer(x)
            x.retain_grad()
            outs.append(x)
        (final(x) * make_cotangent(Net.of(cfg), CPU, tuple(x.shape))).sum().backward()
        for i, (layer, out) in enumerate(zip(layers, outs, strict=True)):
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters() if p.dim() == 2]))
            assert res.table["weight_grad_norm"][i] == pytest.approx(norm.item(), rel=1e-10)
            assert res.table["grad_std"][i] == pytest.approx(out.grad.std().item(), rel=1e-10)


@pytest.mark.parametrize("kw", [{}, {"causal": True, "norm": "rmsnorm"}])
def test_streamed_kept_any_threads_and_grads_give_the_same_forward_bits(kw):
    """The forward statistics do not depend on the threads, on streaming or keeping the weights,
    or on --grads (which must not pick another attention kernel)."""
    from bncli.runtime import torch_threads

    kw = {**SMALL, "dtype": "float32", "width": 64, "tokens": 16, "depth": 5, "norm": "layernorm", **kw}
    tables = []
    for threads, keep in ((1, False), (3, False), (2, True)):
        with torch_threads(threads):
            tables.append(run_depth(keep_weights=keep, **kw)[1].table.to_csv())
    assert all(t == tables[0] for t in tables)
    forward = [c for c in stats.columns("transformer") if c not in ("grad_std", "weight_grad_norm")]
    with_grads = run_depth(grads=True, **kw)[1].table
    pd.testing.assert_frame_equal(with_grads[forward], run_depth(**kw)[1].table[forward])


# -- the papers' results at init, over seeds ---------------------------------------------------------


def seeds(n, **kw):
    """The tables of n seeds' runs at a small size (64 features, 16 tokens, 8 samples, xavier)."""
    base = {"arch": "transformer", "width": 64, "tokens": 16, "heads": 4, "batch_size": 8, "init": "xavier"}
    return [run_depth(seed=s, **{**base, **kw})[1].table for s in range(n)]


def mean_sem(tables, column):
    v = np.array([t[column].to_numpy() for t in tables])
    return v.mean(0), v.std(0, ddof=1) / math.sqrt(len(v))


def test_pure_attention_loses_rank_within_a_few_blocks_and_the_skip_connection_keeps_it():
    """Dong et al. 2021: attention only, no skip, no norm: the tokens of a sample collapse to one
    (token_cos -> 1, erank -> 1) within two or three blocks; with the skip connection they do
    not. 8 seeds; each bound has 4 standard errors of slack on the measured side."""
    pure = seeds(8, depth=6, mlp_ratio=0, residual=0, norm="none", erank=True)
    skip = seeds(8, depth=6, mlp_ratio=0, residual=1, norm="none", erank=True)
    cos, cos_sem = mean_sem(pure, "token_cos")
    rank, rank_sem = mean_sem(pure, "erank")
    assert cos[0] < 0.7 and rank[0] > 8  # one block in: not yet
    assert (cos[2:] - 4 * cos_sem[2:] > 0.999).all() and (rank[2:] + 4 * rank_sem[2:] < 1.05).all()
    cos, cos_sem = mean_sem(skip, "token_cos")
    rank, rank_sem = mean_sem(skip, "erank")
    assert (cos[:3] + 4 * cos_sem[:3] < 0.5).all() and (rank[:3] - 4 * rank_sem[:3] > 12).all()  # of at most 16


def test_an_mlp_with_a_large_lipschitz_constant_slows_the_collapse_a_relu_one_does_not():
    """Dong et al.'s bound lets an MLP counteract the collapse through its Lipschitz constant: a
    tanh MLP with lecun gain 3 (chaotic: it decorrelates its inputs) keeps the tokens apart where
    attention alone, at the same init, has nearly merged them; a ReLU MLP at init (its kernel
    pulls correlations toward 1) collapses them faster still. No skip, no norm; 8 seeds."""
    kw = {"depth": 8, "residual": 0, "norm": "none", "init": "lecun_normal", "init_gain": 3.0}
    alone, alone_sem = mean_sem(seeds(8, mlp_ratio=0, **kw), "token_cos")
    tanh, tanh_sem = mean_sem(seeds(8, activation="tanh", **kw), "token_cos")
    relu, relu_sem = mean_sem(seeds(8, activation="relu", **kw), "token_cos")
    assert alone[-1] - 4 * alone_sem[-1] > 0.6 and tanh[-1] + 4 * tanh_sem[-1] < 0.4
    assert relu[-1] - 4 * relu_sem[-1] > alone[-1] + 4 * alone_sem[-1]


def test_post_ln_gradients_grow_toward_the_output_pre_ln_ones_stay_flat_or_shrink_with_depth():
    """Xiong et al. 2020, at depth 6 and 24 (64 tokens: the size where the effect stands out):
    post-LN's weight_grad_norm grows from the first block to the last, pre-LN's falls (its final
    norm divides by the stream's std, which grows with depth), and with depth the pre-LN's last
    blocks' gradients shrink while its first blocks' stay where they were. Each comparison is
    over seeds (16 at depth 6, 8 at depth 24), with its standard error: the log ratio of last
    to first block per seed, 3 standard errors from 0 (4 where the margin is wide)."""
    kw = {"norm": "layernorm", "grads": True, "width": 64, "tokens": 64, "batch_size": 4}
    runs = {
        (pos, n): np.array(
            [t["weight_grad_norm"] for t in seeds(16 if n == 6 else 8, depth=n, norm_position=pos, **kw)]
        )
        for pos in ("pre", "post")
        for n in (6, 24)
    }

    def log_ratio(g):
        r = np.log(g[:, -1] / g[:, 0])
        return r.mean(), r.std(ddof=1) / math.sqrt(len(r))

    m, sem = log_ratio(runs["post", 6])
    assert m > 3 * sem and m > 0.1  # measured: 0.23 +- 0.04
    for n in (6, 24):
        m, sem = log_ratio(runs["pre", n])
        assert m < -4 * sem and m < -0.3  # measured: -0.46 +- 0.02 and -1.08 +- 0.03

    def diff(a, b):  # mean and standard error of mean(a) - mean(b)
        return a.mean() - b.mean(), math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))

    d, sem = diff(runs["pre", 24][:, -1], runs["pre", 6][:, -1])
    assert d < -4 * sem  # the last block's: 796 -> 392
    d, sem = diff(runs["pre", 24][:, 0], runs["pre", 6][:, 0])
    assert d < 4 * sem  # the first block's do not grow: 1255 -> 1173
    d, sem = diff(runs["post", 24][:, -1], runs["pre", 24][:, -1])
    assert d > 4 * sem  # post-LN's output-side gradients are the large ones: 1536 against 392


def test_the_pre_ln_stream_grows_about_linearly_and_the_post_ln_one_stays_at_one():
    """Post-LN: every token of every block's output is normalised, so the std is 1 (exactly, but
    for LayerNorm's eps and the unbiased std's N / (N - 1)). Pre-LN: each block adds its
    branches' second moment to the stream's, and that lies between the exact bounds of
    docs/theory.md, alpha^2 M and alpha^2 (M + sigma_v^2 sigma_o^2 width^2), so the stream's
    variance grows linearly within those two slopes: the increments of mean(x^2) (= chan_sq_mean
    + chan_var), averaged over 8 seeds, are within them (4 standard errors of slack)."""
    post = seeds(2, depth=12, norm="layernorm", norm_position="post")[0]
    assert (post["std"] - 1).abs().max() < 1e-4 and (post["theory_std"] == 1).all()
    pre = seeds(8, depth=12, norm="layernorm", activation="relu")
    sq = np.array([(t["chan_sq_mean"] + t["chan_var"]).to_numpy() for t in pre])
    steps = np.diff(np.concatenate([np.ones((8, 1)), sq], 1), axis=1)
    mean, sem = steps.mean(0), steps.std(0, ddof=1) / math.sqrt(8)
    d = 64
    s2 = 2 / (d + d)  # xavier's variance of a width x width projection
    mlp = (2 / (d + 4 * d)) * 4 * d * (2 / (d + 4 * d)) * d / 2  # sigma_2^2 H E relu(z)^2, z ~ N(0, sigma_1^2 d)
    assert (mean + 4 * sem > mlp).all() and (mean - 4 * sem < mlp + s2 * d * s2 * d).all()  # 0.32 and 1.32
    assert mean[0] < mean[-1]  # attention adds more as the tokens align (token_cos grows): measured 0.45 -> 0.98


def mean_square_seeds(n, **kw):
    tables = seeds(n, **kw)
    sq = np.array([(t["chan_sq_mean"] + t["chan_var"]).to_numpy() for t in tables])
    return sq.mean(0), sq.std(0, ddof=1) / math.sqrt(n), tables[0]["theory_std"].to_numpy() ** 2


@pytest.mark.parametrize(
    "kw",
    [
        {"norm": "layernorm", "activation": "gelu"},
        {"norm": "rmsnorm", "activation": "relu", "init": "kaiming_uniform"},
        {"norm": "layernorm", "activation": "tanh", "residual": 0.5},
        {"norm": "layernorm", "residual": 0},
        {"norm": "none", "activation": "relu"},
    ],
)
def test_theory_is_exact_for_one_token(kw):
    """One token: attention is O V y, and every term of the mean field is exact in expectation over
    the weights (docs/theory.md), at any width: mean(x^2) averaged over 32 seeds is the
    prediction within 4 standard errors, with nothing added for approximation."""
    mean, sem, predicted = mean_square_seeds(32, depth=6, tokens=1, batch_size=16, **kw)
    assert (np.abs(mean - predicted) <= 4 * sem).all(), (mean, sem, predicted)
    assert (sem < 0.05 * predicted).all()  # the check cannot pass by being noisy


def test_theory_of_many_tokens_is_a_close_approximation():
    """Many tokens: attention's share is the mean field's softmax average (an approximation,
    docs/theory.md). Pre-LN at 16 tokens, 8 seeds: within 4 standard errors plus 5% over 12
    blocks (measured: 5% at most, the standard error 2%); causal masks and train-mode
    batchnorm get nan."""
    mean, sem, predicted = mean_square_seeds(8, depth=12, norm="layernorm", activation="gelu")
    assert (np.abs(mean - predicted) <= 4 * sem + 0.05 * predicted).all(), (mean, sem, predicted)
    for kw in ({"causal": True}, {"norm": "batchnorm"}):
        assert seeds(1, depth=2, **kw)[0]["theory_std"].isna().all()


def test_the_mean_field_pieces_have_their_exact_limits():
    # attention: one token sees itself; zero logits average uniformly; collapsed tokens stay so
    assert theory.attention_kernel(3.0, 0.2, 1, 16) == (1.0, 1.0)
    own, other = theory.attention_kernel(0.0, 0.3, 8, 16)
    assert own == pytest.approx(0.3 + 0.7 / 8, rel=1e-12) and other == pytest.approx(own, rel=1e-12)
    assert theory.attention_kernel(2.0, 1.0, 8, 16) == pytest.approx((1.0, 1.0), rel=1e-12)
    own, other = theory.attention_kernel(1.0, 0.0, 16, 16)
    assert 1 / 16 < other < own < 1  # peaked attention: a token's own mix outweighs two tokens' overlap
    # activations' correlation maps: relu's arc-cosine kernel against quadrature, 1 at rho = 1
    relu = theory.act_correlation(torch.relu, (1 / math.sqrt(2 * math.pi), 0.5), 1.0, 0.0)
    assert relu == pytest.approx(1 / math.pi, rel=1e-12)
    u = np.linspace(-12, 12, 2001)
    gauss = np.exp(-u * u / 2)
    for rho in (0.0, 0.5, 0.9):  # E relu(u) relu(rho u + sqrt(1 - rho^2) w), on a grid (its error at the kink: 3e-5)
        w = u[:, None] * rho + math.sqrt(1 - rho * rho) * u[None, :]
        k = (gauss[:, None] * gauss[None, :] * np.maximum(u[:, None], 0) * np.maximum(w, 0)).sum() / gauss.sum() ** 2
        assert theory.act_correlation(torch.relu, (1 / math.sqrt(2 * math.pi), 0.5), 1.0, rho) == pytest.approx(
            k / 0.5, rel=1e-4
        )
        t, tw = np.tanh(2 * u[:, None]), np.tanh(2 * w)  # tanh at variance 4, by Gauss-Hermite quadrature
        k = (gauss[:, None] * gauss[None, :] * t * tw).sum() / (gauss[:, None] * gauss[None, :] * t * t).sum()
        assert theory.act_correlation(torch.tanh, None, 4.0, rho) == pytest.approx(k, rel=1e-6)
    assert theory.act_correlation(torch.tanh, None, 4.0, 1.0) == pytest.approx(1.0, rel=1e-12)


# -- checks, sizes, the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"arch": "transformer", "width": 30, "heads": 4}, "heads must divide width for arch transformer: width 30"),
        ({"causal": True}, "causal true is for arch transformer, not arch mlp"),
        ({"arch": "conv", "norm_position": "post"}, "norm_position post is for arch transformer, not arch conv"),
        ({"arch": "transformer", "norm": "instancenorm"}, "norm instancenorm normalises each channel over its pixels"),
    ],
)
def test_bad_transformer_settings_are_one_clean_line(kw, message):
    with pytest.raises(BncliError, match=message):
        load("depth-study", **kw)


def test_attention_matrices_that_cannot_fit_are_refused_before_allocating(cli, monkeypatch):
    def no_allocation(*a, **k):
        raise AssertionError("allocated before refusing")

    for fn in ("empty", "zeros", "randn"):
        monkeypatch.setattr(torch, fn, no_allocation)
    r = cli("depth-study", "--arch", "transformer", "--tokens", 1_000_000, "--width", 64, "--depth", 2)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith("Error: too large: transformer: depth 2, width 64, tokens 1000000, heads 4")
    assert "(attention: batch x heads x tokens^2 = 6.4e+13 values a block)" in lines[0]
    assert "use a smaller --tokens" in lines[0] and not cli.out.exists()
    # the estimate holds a block's scores and weights, 2 x batch x heads x tokens^2 float32 values
    large = load("depth-study", arch="transformer", tokens=4096, width=64, device="cpu")
    assert depth.estimate_bytes(large) >= 2 * 16 * 4 * 4096**2 * 4


def test_cli_run_show_plot_and_the_shipped_config(cli, tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    r = cli("depth-study", "--config", root / "configs" / "depth_study_transformer.yaml", "--depth", 3, "--width", 32,
            "--tokens", 8, "--grads", "--name", "tf", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = cli.out / "depth-study" / "tf"
    table = pd.read_csv(run / "layers.csv")
    assert list(table.columns) == stats.columns("transformer") and table["token_cos"].notna().all()
    assert meta_of(run)["status"] == "ok" and "token_cos" in r.output
    assert "token_cos" in cli("show", run).output
    assert cli("plot", run, "--out", tmp_path / "tf.png").exit_code == 0
    assert (tmp_path / "tf.png").stat().st_size > 20_000


def test_the_shipped_transformer_sweep_runs_and_draws_its_plot(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = bncli.sweep(root / "configs" / "sweeps" / "transformer_norms.yaml", tmp_path)
    assert out.failed == 0 and out.total == 24 and out.plot.stat().st_size > 50_000
    table = bncli.open_sweep(out.dir).table
    last = table[table["layer"] == 23].groupby(["norm", "norm_position", "residual"])["token_cos"].mean()
    assert last["layernorm", "pre", 1.0] < 0.9 < last["layernorm", "pre", 0.0]  # the skip keeps the tokens apart
