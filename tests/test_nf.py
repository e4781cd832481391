"""Normalizer-free ResNets (Brock et al. 2021) and SkipInit (De and Smith 2020): --ws scaled,
--nf-beta and --skipinit against networks written out by hand with nn.Conv2d, and Brock et al.'s
signal-propagation results over seeds, with tolerances from the spread over seeds."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import CPU, load, make_input, make_weight, run_depth

import bncli
from bncli import BncliError
from bncli.studies.depth import resnet

SMALL = {"arch": "resnet", "channels": 8, "image_size": 8, "batch_size": 4, "dtype": "float64"}
GAMMA = math.sqrt(2 / (1 - 1 / math.pi))  # relu's: 1 / std of relu(z), z ~ N(0, 1)


def test_scaled_ws_is_per_output_channel_zero_mean_and_gamma_over_sqrt_fan_in():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 7 + 2
    ws = resnet.standardize(w, GAMMA)
    flat = ws.flatten(1)
    assert flat.mean(1).abs().max() < 1e-15
    assert flat.std(1, unbiased=False).numpy() == pytest.approx(np.full(6, GAMMA / 6), rel=1e-12)  # fan_in 36
    assert torch.allclose(resnet.standardize(w * 1e-3 - 5, GAMMA), ws, rtol=1e-9, atol=0)  # the init's scale is gone
    net = load("depth-study", **SMALL)
    assert bncli.studies.depth.components.ACTIVATIONS["relu"].gamma(net) == pytest.approx(GAMMA, rel=1e-12)


def nf_reference(cfg):
    """The NF-ResNet written out: h = relu(x / beta), f = conv(relu(conv(h))), each conv's weight
    standardized (Brock et al.'s eq. 2, with gamma); x + alpha f, or conv1x1(h) + alpha f. Beta
    from the block's count of blocks since the last reset, computed here independently."""
    x, outs = make_input(cfg, CPU), []
    expected_var = 1.0
    for i in range(cfg.depth):
        conv1, conv2, skip, beta = make_weight(cfg, i, CPU)
        assert beta == pytest.approx(math.sqrt(expected_var), rel=1e-15)
        transition = conv1.shape[0] != conv1.shape[1]
        std = (lambda w: resnet.standardize(w, GAMMA)) if cfg.ws == "scaled" else (lambda w: w)
        h = torch.relu(x / beta)
        f = F.conv2d(
            torch.relu(F.conv2d(h, std(conv1), stride=2 if transition else 1, padding=1)), std(conv2), padding=1
        )
        x = (F.conv2d(h, std(skip), stride=2) if transition else x) + cfg.residual * f
        expected_var = 1 + cfg.residual**2 if transition else expected_var + cfg.residual**2
        outs.append((x, f))
    return outs


@pytest.mark.parametrize("ws", ["scaled", "none"])
def test_nf_resnet_matches_the_network_written_out(ws):
    cfg, res = run_depth(stages=2, blocks=3, norm="none", residual=0.3, nf_beta=True, ws=ws, **SMALL)
    with torch.no_grad():
        for i, (x, f) in enumerate(nf_reference(cfg)):
            row = res.table.iloc[i]
            assert row["std"] == pytest.approx(x.std().item(), rel=1e-10)
            assert row["branch_var"] == pytest.approx(f.var((0, 2, 3), unbiased=False).mean().item(), rel=1e-10)


def test_beta_is_the_predicted_std_of_each_block_input():
    net = bncli.studies.depth.net.Net.of(
        load("depth-study", arch="resnet", stages=3, blocks=4, residual=0.2, nf_beta=True)
    )
    betas = [resnet.beta(net, i) ** 2 for i in range(12)]
    # 1 + k alpha^2 after k blocks of a stage; a transition sees the whole previous stage
    assert betas == pytest.approx([1, 1.04, 1.08, 1.12, 1.16, 1.04, 1.08, 1.12, 1.16, 1.04, 1.08, 1.12], rel=1e-12)
    off = bncli.studies.depth.net.Net.of(load("depth-study", arch="resnet", residual=0.2))
    assert {resnet.beta(off, i) for i in range(24)} == {1.0}


SEEDS = 8
NF = {"arch": "resnet", "stages": 3, "blocks": 4, "channels": 32, "image_size": 16, "batch_size": 16}


def nf_seeds(**kw):
    runs = [
        run_depth(seed=s, **{**NF, "norm": "none", "residual": 0.2, "nf_beta": True, **kw})[1].table
        for s in range(SEEDS)
    ]
    return {c: np.array([t[c].to_numpy() for t in runs]) for c in ("chan_var", "chan_sq_mean", "branch_var", "std")} | {
        "theory": runs[0]["theory_std"].to_numpy() ** 2
    }


def mean_sem(a):
    return a.mean(0), a.std(0, ddof=1) / math.sqrt(len(a))


def test_with_scaled_ws_the_skip_variance_grows_by_alpha_squared_a_block_and_resets():
    """Brock et al. 2021, --norm none --ws scaled --nf-beta --residual 0.2: every branch has unit
    variance (each Scaled WS conv takes out its input's mean and keeps its variance, gamma
    making relu's 1), so the skip path's variance grows by alpha^2 = 0.04 a block, less where a
    conv window overhangs the image (the branch's variance, branch_var, is 0.90 at 16 x 16,
    0.80 at 8 x 8, 0.58 at 4 x 4), and each transition's 1x1 conv of a unit-variance input
    restarts it at 1 + alpha^2. The increments of chan_var are alpha^2 branch_var (exactly, in
    expectation: the cross terms vanish), within 4 standard errors over 8 seeds."""
    r = nf_seeds(ws="scaled")
    var, var_sem = mean_sem(r["chan_var"])
    branch = r["branch_var"].mean(0)
    for stage in range(3):
        blocks = slice(4 * stage, 4 * stage + 4)
        steps = np.diff(r["chan_var"][:, blocks], axis=1)
        mean, sem = mean_sem(steps)
        assert (np.abs(mean - 0.04 * branch[blocks][1:]) <= 4 * sem).all(), (stage, mean, sem)
        assert (mean > 0.02).all() and (mean < 0.04 + 4 * sem).all()  # at most alpha^2 a block
    assert (branch[:4] > 0.85).all() and (np.abs(branch - 1) < 0.45).all()  # unit variance, but for the borders
    for t in (4, 8):  # the reset: the transition's output has 1 + alpha^2 branch_var, far below the stage's end
        assert var[t] + 4 * var_sem[t] < var[t - 1] - 0.08
        assert var[t] == pytest.approx(1 + 0.04 * branch[t], abs=4 * var_sem[t] + 0.03)
    assert var[0] == pytest.approx(1 + 0.04 * branch[0], abs=4 * var_sem[0])


def test_scaled_ws_removes_the_mean_shift_that_grows_without_it():
    """Without Scaled WS a relu branch's positive mean passes through each conv and builds up
    (Brock et al.'s mean shift): chan_sq_mean grows with depth, to about half the second
    moment. With it each conv's zero-mean weights take the mean out, but for the borders:
    chan_sq_mean stays under 1% of chan_var. 8 seeds, 4 standard errors."""
    shifted, ws = nf_seeds(ws="none"), nf_seeds(ws="scaled")
    sq, sq_sem = mean_sem(shifted["chan_sq_mean"])
    assert sq[-1] - 4 * sq_sem[-1] > 10 * (sq[0] + 4 * sq_sem[0])  # measured: 0.0135 -> 0.47
    assert (np.diff(sq[:4]) > 0).all() and sq[-1] > 0.3 * shifted["chan_var"].mean(0)[-1]
    sq, sq_sem = mean_sem(ws["chan_sq_mean"])
    assert (sq + 4 * sq_sem < 0.01 * ws["chan_var"].mean(0)).all()  # measured: 3e-4 -> 7.5e-3


@pytest.mark.parametrize("ws", ["scaled", "none"])
def test_nf_theory_matches_simulation(ws):
    """docs/theory.md's maps: a Scaled WS conv's output map from its input's mean and second-moment
    maps (Maps.conv_ws), beta dividing the branch's input map. 8 seeds: within 4 standard errors
    plus 2% (what the maps leave out: the finite channel count, and for ws none the channel
    means' spread)."""
    r = nf_seeds(ws=ws)
    mean, sem = mean_sem(r["std"] ** 2)
    assert (np.abs(mean - r["theory"]) <= 4 * sem + 0.02 * r["theory"]).all(), (mean, sem, r["theory"])


# -- SkipInit ----------------------------------------------------------------------------------------


def test_skipinit_is_the_identity_and_the_small_alpha_limit_residual_zero_is_not():
    """SkipInit (De and Smith 2020) keeps the skip connection and scales each branch by 0: every
    block of the MLP is the identity; a ResNet's only moves at its transitions (the 1x1 skip
    conv). --residual ALPHA tends to it as ALPHA -> 0, its std differing by O(ALPHA) (the branch's
    sample covariance with the skip path, O(1 / sqrt(values)), times ALPHA, then ALPHA^2 of its
    variance); --residual 0 is something else: no skip connection (a ResNet block is its branch)."""
    kw = {"depth": 6, "width": 32, "batch_size": 8, "dtype": "float64", "norm": "none"}
    cfg, skip = run_depth(skipinit=True, **kw)
    assert cfg.residual == 0.0 and (skip.table["std"] == make_input(cfg).std().item()).all()
    gaps = [abs(run_depth(residual=a, **kw)[1].table["std"] - skip.table["std"]).max() for a in (1e-2, 1e-3, 1e-4)]
    assert gaps[1] == pytest.approx(gaps[0] / 10, rel=0.2) and gaps[2] == pytest.approx(gaps[1] / 10, rel=0.05)
    plain = run_depth(residual=0, **kw)[1].table["std"]
    assert (abs(plain - skip.table["std"]) > 0.1).all()
    _, plain = run_depth(residual=0, stages=2, blocks=2, **{**SMALL, "norm": "batchnorm"})
    assert plain.table["chan_var"].to_numpy() == pytest.approx(plain.table["branch_var"].to_numpy(), rel=1e-12)
    _, res = run_depth(skipinit=True, stages=2, blocks=3, **{**SMALL, "norm": "batchnorm"})
    std = res.table["std"].to_numpy()
    assert std[1] == std[0] == std[2] and std[4] == std[3] == std[5] and std[3] != std[2]
    assert res.table["theory_std"].iloc[:3].tolist() == pytest.approx([1.0] * 3, rel=1e-12)


@pytest.mark.parametrize(
    "kw,message",
    [
        (
            {"skipinit": True, "residual": 0.5},
            "skipinit scales each branch by 0 at init: residual must be 0 or left out",
        ),
        ({"ws": "scaled"}, "ws scaled is for arch resnet, not arch mlp"),
        ({"arch": "conv", "nf_beta": True}, "nf_beta true is for arch resnet, not arch conv"),
    ],
)
def test_bad_nf_settings_are_one_clean_line(kw, message):
    with pytest.raises(BncliError, match=message):
        load("depth-study", **kw)
    assert load("depth-study", skipinit=True, residual=0).residual == 0.0


def test_the_shipped_nf_sweep_runs_and_draws_brock_et_al_s_figure(tmp_path):
    root = Path(__file__).resolve().parent.parent
    out = bncli.sweep(root / "configs" / "sweeps" / "nf_resnet.yaml", tmp_path)
    assert out.failed == 0 and out.total == 12 and out.plot.stat().st_size > 50_000
    table = bncli.open_sweep(out.dir).table
    last = table[table["layer"] == 23].groupby(["norm", "ws"])["chan_sq_mean"].mean()
    assert last["none", "none"] > 10 * last["none", "scaled"]  # the mean shift, and Scaled WS without it
