"""Depth study against torch.nn modules and analytic values."""

import math

import numpy as np
import pytest
import torch
from helpers import CPU, load, make_input, make_weight, reference, run_depth

from bncli.studies import depth
from bncli.studies.depth import engine, mlp
from bncli.studies.depth.net import Net

run = run_depth  # (cfg, Result) on the CPU


def reference_stds(cfg, norm_module, act_module):
    """The notebook's MLP, built from nn modules, with bncli's weights copied in."""
    with torch.no_grad():
        outs, _ = reference(cfg, lambda c: norm_module(c.width, dtype=torch.float64).train(), act_module)
    return [x.std().item() for x in outs], [x.mean().item() for x in outs]


@pytest.mark.parametrize(
    "norm,norm_module",
    [
        ("batchnorm", torch.nn.BatchNorm1d),
        ("layernorm", torch.nn.LayerNorm),
        ("none", lambda w, dtype: torch.nn.Identity()),
    ],
)
@pytest.mark.parametrize(
    "act,act_module", [("relu", torch.nn.ReLU()), ("tanh", torch.nn.Tanh()), ("linear", torch.nn.Identity())]
)
def test_matches_nn_modules(norm, norm_module, act, act_module):
    cfg, res = run(depth=12, width=48, batch_size=8, norm=norm, activation=act, dtype="float64")
    stds, means = reference_stds(cfg, norm_module, act_module)
    assert res.table["std"].tolist() == pytest.approx(stds, rel=1e-10)
    assert res.table["mean"].tolist() == pytest.approx(means, rel=1e-8, abs=1e-12)


def test_stats_of_one_layer_by_hand():
    cfg, res = run(depth=1, width=32, batch_size=4, norm="none", init="xavier")
    x = torch.relu(make_input(cfg, CPU) @ make_weight(cfg, 0, CPU).T)
    row = res.table.iloc[0]
    assert row["mean"] == pytest.approx(x.mean().item(), rel=1e-6)
    assert row["std"] == pytest.approx(x.std(unbiased=True).item(), rel=1e-6)
    assert row["abs_max"] == pytest.approx(x.abs().max().item(), rel=1e-6)
    assert row["zero_fraction"] == (x == 0).sum().item() / x.numel()
    # Brock et al.'s per-channel statistics, over the batch axis, averaged over channels
    chan_mean = x.sum(0) / x.shape[0]
    assert row["chan_sq_mean"] == pytest.approx((chan_mean**2).mean().item(), rel=1e-5)
    assert row["chan_var"] == pytest.approx(((x - chan_mean) ** 2).mean().item(), rel=1e-5)
    assert list(res.table.columns) == [
        "layer",
        "mean",
        "std",
        "abs_max",
        "zero_fraction",
        "chan_sq_mean",
        "chan_var",
        "erank",
        "grad_std",
        "weight_grad_norm",
        "theory_std",
    ]
    assert res.table[["erank", "grad_std", "weight_grad_norm"]].isna().all().all()  # off: NaN in memory
    assert res.off == ["erank", "grad_std", "weight_grad_norm"]  # and empty cells in layers.csv


BN_RELU_STD = math.sqrt((math.pi - 1) / (2 * math.pi))  # std of relu(z), z ~ N(0, 1): 0.584


@pytest.mark.parametrize("init", ["kaiming", "xavier", "normal", "orthogonal", "default"])
def test_bn_relu_std_is_analytic_whatever_the_init(init):
    _, res = run(depth=40, width=256, batch_size=64, init=init)
    assert res.status == "ok"
    assert res.table["std"].mean() == pytest.approx(BN_RELU_STD, abs=0.01)
    assert res.table["zero_fraction"].mean() == pytest.approx(0.5, abs=0.02)


def test_normal_init_without_norm_diverges_within_40_layers():
    _, res = run(init="normal", norm="none")
    assert res.status == "diverged"
    assert res.info["diverged_at"] < 40
    assert len(res.table) == res.info["diverged_at"] + 1  # the diverging row is kept
    last = res.table.iloc[-1]
    assert not math.isfinite(last["std"]) and not math.isfinite(last["abs_max"])
    assert np.isfinite(res.table.iloc[:-1][["mean", "std", "abs_max"]].to_numpy()).all()


def test_kaiming_without_norm_keeps_the_second_moment():
    # He et al.: with gain sqrt(2) the mean square of relu pre-activations stays put in depth
    _, res = run(depth=30, width=512, batch_size=64, norm="none", dtype="float64")
    assert res.status == "ok"
    sq = res.table["std"] ** 2 + res.table["mean"] ** 2
    assert sq.iloc[-1] / sq.iloc[0] == pytest.approx(1, abs=0.5)


@pytest.mark.parametrize(
    "init,var",
    [
        ("kaiming", 2 / 400),
        ("kaiming_uniform", 2 / 400),
        ("xavier", 1 / 400),
        ("xavier_uniform", 1 / 400),
        ("orthogonal", 1 / 400),
        ("default", 1 / (3 * 400)),
    ],
)
def test_init_variances(init, var):
    cfg = load("depth-study", None, init=init, width=400, device="cpu")
    w = make_weight(cfg, 0, CPU)
    assert w.var().item() == pytest.approx(var, rel=0.02)


def test_default_init_is_nn_linears_distribution():
    cfg = load("depth-study", None, init="default", width=300, device="cpu")
    w = make_weight(cfg, 0, CPU)
    bound = 1 / math.sqrt(300)
    lin = torch.nn.Linear(300, 300, bias=False).weight
    assert w.abs().max() <= bound and lin.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound


def test_normal_init_uses_init_std():
    cfg = load("depth-study", None, init="normal", init_std=0.25, width=300, device="cpu")
    assert make_weight(cfg, 3, CPU).std().item() == pytest.approx(0.25, rel=0.01)


def test_weights_are_seeded_per_layer():
    a = load("depth-study", None, width=16, device="cpu")
    b = load("depth-study", None, width=16, device="cpu", seed=1)
    assert torch.equal(make_weight(a, 5, CPU), make_weight(a, 5, CPU))
    assert not torch.equal(make_weight(a, 5, CPU), make_weight(a, 6, CPU))
    assert not torch.equal(make_weight(a, 5, CPU), make_weight(b, 5, CPU))


@pytest.mark.parametrize("norm,init", [("batchnorm", "kaiming"), ("none", "normal"), ("layernorm", "orthogonal")])
def test_streaming_and_full_model_are_bitwise_identical(norm, init):
    _, stream = run(depth=60, width=64, norm=norm, init=init)
    _, full = run(depth=60, width=64, norm=norm, init=init, keep_weights=True)
    assert stream.table.to_csv() == full.table.to_csv()
    assert stream.info == full.info


def test_no_per_layer_host_sync(readbacks):
    """Statistics stay on the device: reads back are a handful, not one per layer."""
    _, res = run(depth=200, width=32)
    assert len(res.table) == 200
    assert readbacks["item"] + readbacks["tolist"] == 0
    assert readbacks["cpu"] == 1


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_weights_do_not_depend_on_the_drawing_threads(threads):
    """Layers drawn ahead on threads get the weights each layer's generator gives alone."""
    cfg = load("depth-study", None, depth=7, width=40, init="xavier_uniform", seed=3, device="cpu")
    alone = [make_weight(cfg, i, CPU) for i in reversed(range(7))][::-1]  # in reverse: order is irrelevant
    drawn = list(engine.draw_weights(Net.of(cfg), CPU, threads))
    assert len(drawn) == 7 and all(torch.equal(a, b) for a, b in zip(alone, drawn, strict=True))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_streamed_runs_do_not_depend_on_the_drawing_threads(threads, monkeypatch):
    before, computing = torch.get_num_threads(), engine.split_threads(CPU)[1]
    monkeypatch.setattr(engine, "split_threads", lambda device: (0, computing))
    _, serial = run(depth=40, width=32)
    monkeypatch.setattr(engine, "split_threads", lambda device: (threads, computing))
    _, ahead = run(depth=40, width=32)
    assert torch.get_num_threads() == before  # the computing threads are put back
    assert serial.table.to_csv() == ahead.table.to_csv()


def test_streaming_holds_a_few_weights_whatever_the_depth(monkeypatch):
    """Memory flat in depth: weights alive at once stay at the draw-ahead count, unless kept."""
    import weakref

    real, alive, peak = mlp.make_weight, weakref.WeakSet(), []

    def tracked(net, layer, device):
        w = real(net, layer, device)
        alive.add(w)
        peak.append(len(alive))
        return w

    monkeypatch.setattr(mlp, "make_weight", tracked)
    cfg, res = run(depth=300, width=16)
    assert res.status == "ok" and len(res.table) == 300
    assert max(peak) <= engine.draw_ahead(Net.of(cfg), engine.split_threads(CPU)[0]) + 2
    peak.clear()
    run(depth=300, width=16, keep_weights=True)
    assert max(peak) >= 290  # the full model, for contrast (a few may be in flight at the end)


def test_keep_weights_flag_gives_byte_identical_csv(cli):
    for name, flag in (("stream", "--stream-weights"), ("keep", "--keep-weights")):
        r = cli("depth-study", "--depth", 40, "--width", 96, "--init", "default", "--name", name, flag)
        assert r.exit_code == 0, r.output
    stream, keep = (cli.out / "depth-study" / n / "layers.csv" for n in ("stream", "keep"))
    assert len(stream.read_text().splitlines()) == 41
    assert stream.read_bytes() == keep.read_bytes()


def test_bfloat16_runs():
    _, res = run(depth=20, width=64, dtype="bfloat16")
    assert res.status == "ok"
    assert res.table["std"].mean() == pytest.approx(BN_RELU_STD, abs=0.03)


def test_interrupt_keeps_the_layers_done(monkeypatch):
    real = mlp.make_weight

    def flaky(net, layer, device):
        if layer == 7:
            raise KeyboardInterrupt
        return real(net, layer, device)

    monkeypatch.setattr(mlp, "make_weight", flaky)
    _, res = run(depth=20, width=16)
    assert res.status == "interrupted"
    assert res.table["layer"].tolist() == list(range(7))


def test_progress_is_called_every_few_layers():
    seen = []
    cfg = load("depth-study", None, depth=50, width=8, device="cpu")
    depth.run(cfg, CPU, progress=seen.append)
    assert seen == [16, 32, 48]


def test_too_large_is_refused_before_allocating():
    from bncli.errors import BncliError

    cfg = load("depth-study", None, width=10**6, device="cpu")
    with pytest.raises(BncliError, match=r"too large: .*width 1000000, .*needs about .* GiB"):
        depth.preflight(cfg)


@pytest.mark.parametrize(
    "norm,init,dtype",
    [
        ("batchnorm", "kaiming", "float32"),
        ("batchnorm", "orthogonal", "float64"),
        ("layernorm", "orthogonal", "float32"),
        ("groupnorm", "xavier", "float32"),
        ("rmsnorm", "default", "float32"),
        ("none", "normal", "float32"),
    ],
)
def test_same_bytes_on_any_number_of_threads(norm, init, dtype):
    """A sweep worker, a Ray task and a laptop run with different torch thread counts: the CSV
    must not change. (torch's own CPU batch_norm and QR differ in the last bits between 1 and 3
    threads, which is why bncli writes BatchNorm out and draws orthogonal weights on one thread.)"""
    from bncli.runtime import torch_threads

    tables = []
    for threads in (1, 3):
        with torch_threads(threads):
            _, res = run(depth=25, width=96, batch_size=32, norm=norm, init=init, dtype=dtype, init_std=0.1, grads=True)
        tables.append(res.table.to_csv())
    assert tables[0] == tables[1]


def test_written_out_batchnorm_matches_torch_in_float64():
    from bncli.studies.depth.components import _bn_train

    x = torch.randn(16, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    ref = torch.nn.BatchNorm1d(40, dtype=torch.float64).train()(x)
    torch.testing.assert_close(_bn_train(x), ref, rtol=1e-12, atol=1e-12)
