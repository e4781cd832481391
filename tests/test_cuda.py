"""Every command on CUDA, checked against analytic values, the CPU run and bncli's guarantees.

    make test-gpu        # these tests only; skipped (not failed) on a machine without CUDA

CUDA draws other random numbers than the CPU for the same seed (another generator), so the
comparisons with the CPU are statistical, with tolerances from the spread over seeds.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import file_bytes, sweep_file

import bncli

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def depth(device, **kw):
    return bncli.depth_study(device=device, **kw)


def test_bn_relu_std_is_analytic_on_cuda_as_on_cpu():
    # the BN-ReLU fixed point: std of relu(z), z ~ N(0,1) normalised over the batch; per layer
    # the seeds scatter by ~0.02, so the mean over 100 layers of 8 seeds is within 0.01 of it
    for dev in ("cuda", "cpu"):
        stds = np.array([depth(dev, seed=s).table["std"].to_numpy() for s in range(8)])
        theory = depth(dev).table["theory_std"].iloc[-1]
        assert abs(stds.mean() - theory) < 0.01, (dev, stds.mean(), theory)


def test_normal_init_without_norm_diverges_on_cuda():
    r = depth("cuda", init="normal", norm="none")
    assert r.status == "diverged" and 25 <= r.info["diverged_at"] <= 45


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"norm": "layernorm", "init": "orthogonal"},
        {"dtype": "bfloat16"},
        {"norm": "none", "init": "normal", "init_std": 0.2},
    ],
)
def test_streamed_and_kept_weights_give_the_same_bits_on_cuda(kw):
    a = depth("cuda", depth=60, width=128, **kw).table
    b = depth("cuda", depth=60, width=128, keep_weights=True, **kw).table
    pd.testing.assert_frame_equal(a, b)


def test_one_readback_per_run_on_cuda(readbacks):
    depth("cuda", depth=300, width=256)
    assert readbacks["item"] == 0 and readbacks["cpu"] == 1  # no host sync until the end


def test_gradient_growth_matches_theory_on_cuda():
    r = depth("cuda", depth=40, width=512, batch_size=32, grads=True)
    from bncli.report import growth

    measured = growth(r.table["grad_std"], backwards=True)
    assert measured == pytest.approx(r.info["grad_growth_theory"], rel=0.03)


def test_running_stats_match_the_notebook_on_cuda():
    r = bncli.running_stats(momentum=0.3, device="cuda")
    last = r.table[r.table.iteration == 1]
    assert last["running_mean"].tolist() == pytest.approx([0.51, 1.02, 1.53, 2.04, 2.55], rel=1e-6)
    assert last["running_var"].tolist() == pytest.approx([0.49] * 5, rel=1e-6)
    for dims in (1, 2, 3):
        r = bncli.running_stats(momentum=0.1, dims=dims, input="randn", iterations=5, device="cuda")
        assert np.allclose(r.table["running_mean"], r.table["expected_mean"], rtol=1e-5, atol=1e-6)
        assert np.allclose(r.table["running_var"], r.table["expected_var"], rtol=1e-5, atol=1e-6)


def test_convergence_on_cuda_reaches_the_truth():
    r = bncli.convergence(device="cuda", dtype="float64", iterations=400)
    last = r.table[r.table.iteration == 399]
    precise = last[last.estimator == "precise"]
    # after t batches of B the population mean has standard error sigma / sqrt(t B): 5 of them
    assert (precise["mean_error"] < 5 / np.sqrt(400 * 32)).all()


def test_every_command_runs_on_cuda(cli, tmp_path):
    for args in (
        ["depth-study", "--depth", 30, "--grads", "--erank"],
        ["running-stats", "--dims", 2],
        ["convergence", "--iterations", 50],
        ["depth-study", "--arch", "resnet", "--blocks", 2, "--channels", 16, "--grads", "--erank"],
    ):
        name = f"gpu{len(args)}"
        r = cli(*args, "--device", "cuda", "--name", name)
        assert r.exit_code == 0, r.output
        run = cli.out / args[0] / name
        meta = json.loads((run / "meta.json").read_text())
        assert meta["device"] == "cuda" and meta["device_name"] == torch.cuda.get_device_name(0)
        assert cli("show", run).exit_code == 0
    path = sweep_file(
        tmp_path,
        base={"depth": 20, "width": 64, "device": "cuda"},
        grid={"init": ["kaiming", "normal"], "norm": ["batchnorm", "none"]},
        seeds=[0, 1],
    )
    one = cli("sweep", path, "--out", tmp_path / "one", "--no-progress")
    two = cli("sweep", path, "--out", tmp_path / "two", "--workers", 2, "--no-progress")
    assert one.exit_code == 0 and two.exit_code == 0, (one.output, two.output)
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")  # workers on one GPU: same bits
    assert cli("plot", tmp_path / "one" / "sweeps" / "s", "--metric", "chan_var").exit_code == 0


@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm", "layernorm", "rmsnorm", "none"])
def test_conv_and_resnet_run_on_cuda_with_every_norm(norm):
    for arch in ("conv", "resnet"):
        r = depth(
            "cuda",
            arch=arch,
            norm=norm,
            groups=8,
            depth=12 if arch == "conv" else None,
            stages=2,
            blocks=3,
            channels=16,
            keep_weights=False,
        )
        assert r.status == "ok" and r.table["std"].notna().all()
        kept = depth(
            "cuda",
            arch=arch,
            norm=norm,
            groups=8,
            depth=12 if arch == "conv" else None,
            stages=2,
            blocks=3,
            channels=16,
            keep_weights=True,
        )
        pd.testing.assert_frame_equal(r.table, kept.table)


def test_resnet_signal_propagation_on_cuda_matches_theory():
    runs = [depth("cuda", arch="resnet", stages=3, blocks=4, channels=32, seed=s).table for s in range(16)]
    sq = np.array([t["std"].to_numpy() ** 2 for t in runs])
    theory = runs[0]["theory_std"].to_numpy() ** 2
    sem = sq.std(0, ddof=1) / np.sqrt(len(sq))
    assert (np.abs(sq.mean(0) - theory) <= 4 * sem + 0.03 * theory).all()


@pytest.mark.parametrize("position", ["pre", "post"])
def test_transformer_on_cuda_agrees_with_the_cpu_over_seeds(position):
    """The same statistics from CUDA's random numbers: post-LN's std is 1 on both, pre-LN's grows
    as on the CPU (the seed means of std^2 within 4 standard errors of each other), and with
    --grads the forward numbers are those without, to float32's precision (CUDA may pick another
    attention kernel when gradients are asked for)."""
    kw = {"arch": "transformer", "depth": 6, "width": 64, "tokens": 16, "batch_size": 8, "init": "xavier"}
    kw["norm_position"] = position
    sq = {}
    for dev in ("cuda", "cpu"):
        runs = [depth(dev, seed=s, norm="layernorm", **kw).table for s in range(8)]
        sq[dev] = np.array([t["std"].to_numpy() ** 2 for t in runs])
        if position == "post":
            assert (np.abs(sq[dev] - 1) < 1e-3).all()
    sem = np.sqrt(sq["cuda"].var(0, ddof=1) / 8 + sq["cpu"].var(0, ddof=1) / 8)
    assert (np.abs(sq["cuda"].mean(0) - sq["cpu"].mean(0)) <= 4 * sem + 1e-6).all()
    plain = depth("cuda", norm="layernorm", **kw).table
    grads = depth("cuda", norm="layernorm", grads=True, **kw).table
    forward = [c for c in plain.columns if c not in ("grad_std", "weight_grad_norm")]
    pd.testing.assert_frame_equal(plain[forward], grads[forward], rtol=1e-4, atol=1e-6)
    assert grads["weight_grad_norm"].notna().all()


def test_pure_attention_collapses_and_nf_resnets_propagate_on_cuda():
    collapsed = [
        depth("cuda", seed=s, arch="transformer", depth=4, width=64, tokens=16, batch_size=8, init="xavier",
              mlp_ratio=0, residual=0, norm="none", erank=True).table
        for s in range(4)
    ]  # fmt: skip
    assert all((t["token_cos"].iloc[2:] > 0.999).all() and (t["erank"].iloc[2:] < 1.1).all() for t in collapsed)
    nf = [
        depth("cuda", seed=s, arch="resnet", stages=2, blocks=4, channels=32, norm="none", residual=0.2,
              ws="scaled", nf_beta=True).table
        for s in range(8)
    ]  # fmt: skip
    var = np.array([t["chan_var"].to_numpy() for t in nf])
    steps = np.diff(var[:, :4], axis=1)
    branch = np.mean([t["branch_var"].to_numpy() for t in nf], 0)
    sem = steps.std(0, ddof=1) / np.sqrt(8)
    assert (np.abs(steps.mean(0) - 0.04 * branch[1:4]) <= 4 * sem).all()
    assert (np.array([t["chan_sq_mean"].to_numpy() for t in nf]).mean(0) < 0.01).all()


def test_the_transformer_and_nf_commands_run_on_cuda(cli):
    for args in (
        ["--arch", "transformer", "--depth", 4, "--tokens", 16, "--grads", "--erank", "--causal"],
        [
            "--arch",
            "resnet",
            "--blocks",
            2,
            "--channels",
            16,
            "--ws",
            "scaled",
            "--nf-beta",
            "--norm",
            "none",
            "--grads",
        ],
        ["--skipinit", "--depth", 10],
    ):
        r = cli("depth-study", *args, "--device", "cuda", "--name", "g")
        assert r.exit_code == 0, r.output
        run = cli.out / "depth-study" / "g"
        assert json.loads((run / "meta.json").read_text())["device"] == "cuda"
        assert cli("show", run).exit_code == 0
        import shutil

        shutil.rmtree(run)
