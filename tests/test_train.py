"""bncli train: the loop against a hand-written PyTorch loop, step-0 statistics against the depth
study's, divergence, the shipped sweeps at a small size, resume, TensorBoard's events."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import AUTO, CPU, load, meta_of

from bncli import sweeps
from bncli.studies import depth, train
from bncli.studies.depth import engine as depth_engine
from bncli.studies.depth import stats
from bncli.studies.depth.net import Net, make_input
from bncli.studies.train import data, engine

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(depth=3, width=8, batch_size=8, steps=12, eval_every=4, probe_size=16)


def cfg_of(**kw):
    return load("train", **{"device": "cpu", **TINY, **kw})


def hand_loop(cfg):
    """The network written with nn modules (bncli's initial weights copied in), trained with
    torch.optim on the same batches: (losses, test accuracy at the end, in eval mode)."""
    dtype = torch.float64
    model = engine.Model(Net.of(cfg), cfg.input_dim, cfg.classes, CPU)  # only for its initial weights
    d = data.load(cfg, CPU, dtype)
    act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[cfg.activation]
    mods = []
    for w in model.layers:
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
        norm = torch.nn.BatchNorm1d(cfg.width, dtype=dtype) if cfg.norm == "batchnorm" else torch.nn.Identity()
        mods += [lin, norm, act()]
    head = torch.nn.Linear(cfg.width, cfg.classes, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(model.head_w)
        head.bias.zero_()
    net = torch.nn.Sequential(*mods, head)
    opt = (
        torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum_sgd, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "sgd"
        else torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    )
    batches = data.Batches(len(d.y_train), cfg.batch_size, cfg.seed, CPU)
    losses = []
    for t in range(cfg.steps + 1):
        if t == cfg.steps:
            net.eval()
            with torch.no_grad():
                acc = (net(d.x_test).argmax(1) == d.y_test).double().mean().item()
            net.train()
        idx = batches(t)
        loss = torch.nn.functional.cross_entropy(net(d.x_train[idx]), d.y_train[idx])
        losses.append(loss.item())
        if t < cfg.steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return np.array(losses), acc


@pytest.mark.parametrize(
    "kw",
    [
        dict(norm="batchnorm", optimizer="sgd", momentum_sgd=0.9, weight_decay=1e-3, activation="relu"),
        dict(norm="none", optimizer="adam", lr=0.05, activation="sigmoid", data="gaussians", samples=100),
    ],
    ids=["bn-sgd-digits", "none-adam-gaussians"],
)
def test_the_loop_is_a_hand_written_pytorch_loop(kw):
    """Same seeds, float64: every step's loss and the final test accuracy (BatchNorm's running
    statistics in eval mode) agree with nn.Linear/nn.BatchNorm1d and torch.optim."""
    cfg = cfg_of(dtype="float64", **kw)
    r = train.run(cfg, CPU)
    losses, acc = hand_loop(cfg)
    assert r.status == "ok" and len(r.table) == cfg.steps + 1
    np.testing.assert_allclose(r.table["loss"].to_numpy(), losses, rtol=1e-12, atol=0)
    assert r.table["test_acc"].iloc[-1] == pytest.approx(acc, abs=1e-12)
    assert losses[-4:].mean() < losses[:4].mean()  # it learns: the comparison is not of two untrained nets


@pytest.mark.parametrize(
    "arch,norm", [("mlp", "batchnorm"), ("mlp", "layernorm"), ("mlp", "none"), ("conv", "batchnorm")]
)
def test_step_0_statistics_are_the_depth_studys(arch, norm):
    """Fed the depth study's N(0, 1) input, the train study's probe gives the depth study's
    numbers at step 0: the same weights (seeds), the same statistic records."""
    small = dict(arch=arch, norm=norm, depth=4, dtype="float64", seed=3)
    small.update(dict(width=16, batch_size=8) if arch == "mlp" else dict(channels=4, image_size=4, batch_size=2))
    dcfg = load("depth-study", device="cpu", **small)
    tcfg = load("train", device="cpu", data="gaussians", input_dim=16, samples=100, **small)
    ref = depth_engine.run(depth.network(dcfg), set(), False, CPU).table
    model = engine.Model(Net.of(tcfg), tcfg.input_dim, tcfg.classes, CPU)
    model.embed = None  # the depth study's input goes straight into layer 0
    if arch == "mlp":
        model.layers[0] = model.arch.make_weight(Net.of(tcfg), 0, CPU)
    _, computed = engine.layer_columns(Net.of(tcfg), set())
    x = make_input(Net.of(dcfg), CPU)
    model.built(len(x))  # a (batch, ...) input: features() takes it as the body's input
    got = engine.probe_rows(model, x, computed).numpy()
    for j, s in enumerate(computed):
        np.testing.assert_allclose(got[:, j], ref[s.name].to_numpy(), rtol=1e-10, atol=1e-12, err_msg=s.name)


def test_step_0_layer_0_weight_is_the_depth_studys_when_input_dim_is_width():
    tcfg = cfg_of(data="gaussians", input_dim=8, samples=100)
    model = engine.Model(Net.of(tcfg), 8, tcfg.classes, CPU)
    assert torch.equal(model.layers[0], Net.of(tcfg).arch_module().make_weight(Net.of(tcfg), 0, CPU))


@pytest.mark.parametrize("every_step", [True, False], ids=["checked-every-step", "checked-at-evaluations"])
def test_a_diverging_learning_rate_is_recorded_as_diverged_with_its_step(cli, monkeypatch, every_step):
    """On CPU the loss is checked every step; on CUDA at evaluations, the rows past the first
    non-finite loss dropped: the same table either way."""
    monkeypatch.setattr(engine, "checks_every_step", lambda device: every_step)
    r = cli(
        "train",
        "--data",
        "gaussians",
        "--samples",
        100,
        "--norm",
        "none",
        "--lr",
        1e4,
        "--depth",
        3,
        "--width",
        8,
        "--batch-size",
        8,
        "--steps",
        50,
        "--name",
        "d",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    run = cli.out / "train" / "d"
    meta = meta_of(run)
    table = pd.read_csv(run / "train.csv")
    at = meta["diverged_at"]
    assert meta["status"] == "diverged" and 0 < at < 50 and len(table) == at + 1
    assert np.isfinite(table["loss"].iloc[:-1]).all() and not np.isfinite(table["loss"].iloc[-1])
    assert f"diverged: non-finite loss at step {at}" in r.output


def test_records_every_n_steps_and_the_last(cli):
    r = cli(
        "train",
        "--steps",
        10,
        "--record-every",
        4,
        "--eval-every",
        5,
        "--depth",
        2,
        "--width",
        8,
        "--name",
        "r",
        "--device",
        AUTO.type,
    )
    assert r.exit_code == 0, r.output
    layers = pd.read_csv(cli.out / "train" / "r" / "layers.csv")
    assert sorted(set(layers["step"])) == [0, 4, 8, 10] and list(layers["layer"][:2]) == [0, 1]
    assert {"std", "chan_var", "p15", "p50", "p85", "grad_norm"} <= set(layers.columns)
    assert (layers["p15"] < layers["p50"]).all() and (layers["p50"] < layers["p85"]).all()
    assert (layers["grad_norm"] > 0).all()
    table = pd.read_csv(cli.out / "train" / "r" / "train.csv")
    assert table["test_acc"].notna().tolist() == [t in (0, 5, 10) for t in range(11)]
    last = layers[layers["layer"] == 1].set_index("step")
    np.testing.assert_allclose(table.set_index("step").loc[[0, 4, 8, 10], "last_p50"], last["p50"], rtol=1e-12)


@pytest.mark.parametrize(
    "args,words",
    [
        (["--data", "digits", "--samples", "100"], "samples is 1797 for data digits"),
        (["--grads"], "grads is the depth study's"),
        (["--bn-mode", "eval"], "bn_mode"),
        (["--batch-size", "5000"], "batch_size 5000 is more than the 1500 training samples"),
        (["--optimizer", "rmsprop"], "rmsprop"),
    ],
)
def test_bad_input_is_one_line(cli, args, words):
    r = cli("train", *args)
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output


def test_digits_are_sklearns_and_the_split_is_fixed():
    x, y = data.digits()
    assert x.shape == (1797, 64) and x.max() == 16 and sorted(set(y)) == list(range(10))
    a = data.load(cfg_of(seed=0), CPU, torch.float32)
    b = data.load(cfg_of(seed=5), CPU, torch.float32)
    assert len(a.y_train) == 1500 and len(a.y_test) == 297 and torch.equal(a.y_test, b.y_test)
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    assert (d.data == x).all() and (d.target == y).all()


def small_sweep(name, out, **given):
    """A shipped sweep at a small size: fewer steps, one seed."""
    return sweeps.plan(ROOT / "configs" / "sweeps" / f"{name}.yaml", out, **given)


def test_the_shipped_sweeps_run_at_a_small_size(cli, tmp_path):
    r = cli(
        "sweep",
        ROOT / "configs/sweeps/bn_paper.yaml",
        "--out",
        tmp_path,
        "--set",
        "steps=20",
        "--set",
        "eval_every=10",
        "--set",
        "record_every=10",
        "--seeds",
        "0",
    )
    assert r.exit_code == 0, r.output
    s = pd.read_csv(tmp_path / "sweeps" / "bn_paper" / "summary.csv")
    assert set(s["setting:norm"] if "setting:norm" in s else s["norm"]) == {"batchnorm", "none"}
    assert (tmp_path / "sweeps" / "bn_paper" / "train.png").stat().st_size > 0
    r = cli(
        "sweep",
        ROOT / "configs/sweeps/lr_tolerance.yaml",
        "--out",
        tmp_path,
        "--set",
        "steps=5",
        "--set",
        "depth=3",
        "--set",
        "width=8",
        "--set",
        "samples=100",
        "--seeds",
        "0",
    )
    assert r.exit_code == 0, r.output
    s = pd.read_csv(tmp_path / "sweeps" / "lr_tolerance" / "summary.csv")
    assert s["run"].nunique() == 16
    assert (tmp_path / "sweeps" / "lr_tolerance" / "train.png").stat().st_size > 0


def test_resume_after_ctrl_c_continues_a_sweep(tmp_path, monkeypatch):
    """Ctrl-C in the second run: the first kept, the second interrupted; --resume finishes it."""
    f = tmp_path / "s.yaml"
    f.write_text("study: train\nname: s\nbase: {depth: 2, width: 8, steps: 30, device: cpu}\ngrid: {lr: [0.1, 0.2]}\n")
    real = engine.F.cross_entropy
    calls = {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 31 + 10:  # ten steps into the second run
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine.F, "cross_entropy", interrupting)
    out = sweeps.run(sweeps.plan(f, tmp_path / "o"))
    monkeypatch.setattr(engine.F, "cross_entropy", real)
    assert out.interrupted
    d = tmp_path / "o" / "sweeps" / "s" / "runs"
    assert meta_of(d / "lr=0.1,seed=0")["status"] == "ok"
    assert meta_of(d / "lr=0.2,seed=0")["status"] == "interrupted"
    sweeps.run(sweeps.plan(f, tmp_path / "o"), resume=True)
    assert meta_of(d / "lr=0.2,seed=0")["status"] == "ok"
    assert len(pd.read_csv(d / "lr=0.2,seed=0" / "train.csv")) == 31


def test_tensorboard_events_hold_train_csvs_values(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    r = cli(
        "train",
        "--steps",
        8,
        "--eval-every",
        4,
        "--record-every",
        4,
        "--depth",
        2,
        "--width",
        8,
        "--tensorboard",
        tb,
        "--name",
        "t",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    ev = EventAccumulator(str(tb), size_guidance={"scalars": 0, "histograms": 0})
    ev.Reload()
    table = pd.read_csv(cli.out / "train" / "t" / "train.csv")
    loss = [(e.step, e.value) for e in ev.Scalars("loss")]
    assert [s for s, _ in loss] == list(range(9))
    np.testing.assert_allclose([v for _, v in loss], table["loss"], rtol=1e-6)
    acc = {e.step: e.value for e in ev.Scalars("test_acc")}
    assert sorted(acc) == [0, 4, 8]
    np.testing.assert_allclose([acc[s] for s in (0, 4, 8)], table["test_acc"].dropna(), rtol=1e-6)
    layers = pd.read_csv(cli.out / "train" / "t" / "layers.csv")
    std = {e.step: e.value for e in ev.Scalars("layer_01/std")}
    np.testing.assert_allclose([std[s] for s in (0, 4, 8)], layers[layers["layer"] == 1]["std"], rtol=1e-6)
    assert [h.step for h in ev.Histograms("activations/layer_00")] == [0, 4, 8]


def test_stats_columns_follow_the_depth_studys_records():
    cols, computed = engine.layer_columns(Net.of(cfg_of()), set())
    assert [s.name for s in computed] == [s.name for s in stats.buffered("mlp", set(), False)]
    assert cols[:2] == ["step", "layer"] and cols[-4:] == ["p15", "p50", "p85", "grad_norm"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(arch="conv", channels=4, image_size=4, depth=2),
        dict(arch="resnet", channels=4, image_size=4, stages=2, blocks=1),
        dict(arch="transformer", width=8, tokens=3, heads=2, depth=2, norm="layernorm", erank=True),
    ],
    ids=["conv", "resnet", "transformer"],
)
def test_every_architecture_trains_with_its_own_statistics(kw):
    """Feature maps and tokens through an input map, pooled by the head; each architecture's own
    columns (a conv's stage, a ResNet's branch_var, a transformer's token_cos) in layers.csv."""
    cfg = load("train", device=AUTO.type, steps=4, eval_every=2, record_every=2, batch_size=4, probe_size=4, **kw)
    r = train.run(cfg, AUTO)
    layers = r.files["layers.csv"]
    assert r.status == "ok" and len(r.table) == 5 and len(layers) == 3 * cfg.depth
    own = {"conv": "stage", "resnet": "branch_var", "transformer": "token_cos"}[cfg.arch]
    assert layers[own].notna().all() and np.isfinite(layers["std"]).all() and (layers["grad_norm"] > 0).all()
