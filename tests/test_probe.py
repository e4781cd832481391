"""bncli probe on models written here (plain torch, no optional package): each trap of tapping a
model checked against hooks written by hand, the statistics against float64, the interventions
against torch's own modules, and the command through the CLI, a sweep, show, compare and plot.
The same on torchvision, timm and Hugging Face models: tests/test_probe_vision.py."""

import gc
import json
import math
import sys
import weakref
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from helpers import by_hand, hook_count, moments64
from torch import nn

import bncli
from bncli import api
from bncli.studies.depth import stats as depth_stats
from bncli.studies.probe import engine, interventions, stats, taps

MODEL_FILE = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return x + self.act(self.norm(self.lin(x)))


def build(width=16, blocks=3):
    return nn.Sequential(nn.Linear(width, width), *[Block(width) for _ in range(blocks)], nn.Linear(width, 4))
"""


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_model.py").write_text(MODEL_FILE)
    return "my_model.py:build"


def table(model, *args, names=(), **kw):
    return engine.probe(model, args, names, **kw).table(kw.get("erank", False), kw.get("grads", False))


# -- the statistics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,axis", [((8, 6, 5, 7), 1), ((4, 9, 12), 2), ((3, 5, 5, 10), 3), ((64, 20), 1), ((7,), 0)]
)
def test_moments_match_float64_on_any_layout(shape, axis):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g).relu_() * 3 + 0.5
    got = stats.moments(x, axis, stats.Zeros()).tolist()
    want = moments64(x, axis)
    for name, v in zip(stats.MOMENTS, got, strict=True):
        assert v == pytest.approx(want[name], rel=1e-6, abs=1e-12), name
    assert got == pytest.approx(stats.moments(x, axis, stats.Zeros(), exact=True).tolist(), rel=1e-6)


def test_a_variance_that_would_cancel_or_overflow_is_redone_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, 30, generator=g) + 3000.0  # mean^2 / var ~ 1e7: one float32 pass keeps no digit
    s1 = x.sum((0, 2)).double()
    s2 = torch.linalg.vector_norm(x, dim=(0, 2)).double().square()
    naive = (s2 / 480 - (s1 / 480).square()).mean().item()
    want = moments64(x, 1)
    assert abs(naive - want["chan_var"]) > 1e-3 * want["chan_var"]  # the trap the guard is for
    got = dict(zip(stats.MOMENTS, stats.moments(x, 1, stats.Zeros()).tolist(), strict=True))
    assert got["chan_var"] == pytest.approx(want["chan_var"], rel=1e-9)
    assert got["std"] == pytest.approx(want["std"], rel=1e-9)
    big = torch.randn(4, 3, 10, generator=g) * 1e30  # squares past float32's max: finite values, finite stats
    got = dict(zip(stats.MOMENTS, stats.moments(big, 1, stats.Zeros()).tolist(), strict=True))
    assert got["std"] == pytest.approx(moments64(big, 1)["std"], rel=1e-9)
    inf = big.clone()
    inf[0, 0, 0] = math.inf  # a non-finite output stays non-finite: the run reads it as diverged
    assert not math.isfinite(stats.moments(inf, 1, stats.Zeros())[1].item())


@pytest.mark.parametrize("axis", [1, 3])
def test_a_tap_read_in_chunks_gives_the_same_statistics(monkeypatch, axis):
    # the chunked paths on a tiny tensor, 60 values a chunk: (N, C, ...) as 6 rows of 30 values,
    # 2 rows a chunk; channels-last as 30 rows of 6 channels, 10 rows a chunk
    monkeypatch.setattr(stats, "FUSE", 64)
    monkeypatch.setattr(stats, "CHUNK", 60)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 6, generator=g).relu_() * 3 + 0.25
    x[1, 1:] -= 0.25  # the first two chunks all positive (not counted), the last holding zeros (counted)
    x[1, 2, 0, :3] = torch.tensor([0.0, -0.0, -2.0])
    want = moments64(x, axis)
    assert want["zero_fraction"] > 0
    with monkeypatch.context() as m:  # the one-pass sums themselves, not the guard's two-pass redo
        m.setattr(stats, "_exact", lambda *a: pytest.fail("redone two-pass"))
        got = dict(zip(stats.MOMENTS, stats.moments(x, axis, stats.Zeros()).tolist(), strict=True))
    for name, v in got.items():
        assert v == pytest.approx(want[name], rel=1e-6, abs=1e-12), name
    assert got["zero_fraction"] == want["zero_fraction"]  # exact counts
    x[0, 2, 1, 1] = math.nan  # a NaN in any chunk reaches the statistics
    nan = dict(zip(stats.MOMENTS, stats.moments(x, axis, stats.Zeros()).tolist(), strict=True))
    assert all(math.isnan(v) for k, v in nan.items() if k != "zero_fraction")


def test_zeros_are_counted_exactly_across_chunks(monkeypatch):
    monkeypatch.setattr(stats, "ZERO_CHUNK", 7)
    x = torch.tensor([0.0, 1, 0, 2, 0, 0, 3, 0, 4, 5, 0, -0.0, 6, 7, 8, 0, 9])
    assert stats.Zeros().count(x).item() == 8
    assert stats.Zeros().number(x.view(1, -1)) == 8


def test_probe_uses_the_depth_study_records():
    depth = {s.name: s for s in depth_stats.STATS}
    for name in ["mean", "std", "abs_max", "zero_fraction", "chan_sq_mean", "chan_var", "erank"]:
        mine = next(s for s in stats.STATS if s.name == name)
        assert (mine.what, mine.source, mine.watch) == (depth[name].what, depth[name].source, depth[name].watch)


# -- the traps of tapping -------------------------------------------------------------------------


def test_statistics_are_taken_before_a_later_inplace_op_changes_the_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True))
    x = torch.randn(64, 32)
    inside = by_hand(model, x, ["1"])["1"]  # cloned in the hook, before the ReLU
    after = {}
    h = model[1].register_forward_hook(lambda m, a, out: after.update(out=out))
    with torch.no_grad():
        model(x)
    h.remove()
    assert (after["out"] == 0).float().mean() > 0.3  # read after the forward: the ReLU has zeroed half
    t = table(model, x, names=["1"], output=False)
    assert t["std"][0] == pytest.approx(moments64(inside, 1)["std"], rel=1e-6)
    assert t["std"][0] == pytest.approx(1.0, abs=0.01) and t["zero_fraction"][0] == 0


def test_a_module_called_twice_gives_a_row_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    torch.manual_seed(1)
    model, x = Twice(), torch.randn(16, 8)
    calls = []
    h = model.lin.register_forward_hook(lambda m, a, out: calls.append(out.detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    t = table(model, x, names=["lin"], output=False)
    assert t["call"].tolist() == [0, 1] and t["index"].tolist() == [0, 1]
    for row, out in zip(t.itertuples(), calls, strict=True):
        assert row.std == pytest.approx(out.std().item(), rel=1e-6)


@dataclass
class Out:
    hidden: torch.Tensor
    count: int


class Outputs(nn.Module):
    """Each kind of output: a tuple with a non-float first, a dict, a dataclass."""

    def __init__(self, kind):
        super().__init__()
        self.kind, self.lin = kind, nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        if self.kind == "tuple":
            return torch.tensor([3]), (None, y)
        if self.kind == "dict":
            return {"mask": x > 0, "logits": y}
        return Out(y, 2)


@pytest.mark.parametrize("kind,path", [("tuple", "out[1][1]"), ("dict", "out['logits']"), ("dataclass", "out.hidden")])
def test_tuple_dict_and_dataclass_outputs_are_found_and_named(kind, path):
    torch.manual_seed(2)
    model, x = Outputs(kind), torch.randn(6, 4)
    t = table(model, x)
    assert t["module"].tolist() == [taps.OUTPUT] and t["output"].tolist() == [path]
    with torch.no_grad():
        assert t["std"][0] == pytest.approx(model.lin(x).std().item(), rel=1e-6)


def test_gradients_come_from_tensor_hooks_on_the_tapped_outputs():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 8))
    x = torch.randn(32, 16)
    t = table(model, x, names=["0", "1", "3"], grads=True, seed=5)
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated in the model
    # by hand: the same forward and seeded cotangent; the BatchNorm's output is changed in place by the
    # ReLU, so its gradient is written out: the ReLU's mask times the last Linear's backward
    first = model[0](x)
    first.retain_grad()
    bn = model[1](first)
    mask = (bn > 0).float()
    y = model[3](model[2](bn))
    ct = torch.randn(y.shape, generator=engine.generator(y.device, 5, engine.Stream.PROBE_GRAD))
    y.backward(ct)
    assert t["grad_std"][0] == pytest.approx(first.grad.std().item(), rel=1e-5)
    assert t["grad_std"][1] == pytest.approx(((ct @ model[3].weight) * mask).std().item(), rel=1e-5)
    assert t["grad_std"][2] == pytest.approx(ct.std().item(), rel=1e-6)


def test_hooks_and_state_are_undone_after_a_run_an_error_and_an_interrupt():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 8)).train()
    x = torch.randn(16, 8)
    before, state = hook_count(model), {k: v.clone() for k, v in model.state_dict().items()}
    first = table(model, x, names=["0", "1", "2"], grads=True)
    assert hook_count(model) == before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # running stats put back
    second = table(model, x, names=["0", "1", "2"], grads=True)
    pd.testing.assert_frame_equal(first, second)  # the same object, probed twice: the same numbers
    assert all(p.grad is None for p in model.parameters())

    class Boom(nn.Module):
        def __init__(self, error):
            super().__init__()
            self.error = error

        def forward(self, x):
            raise self.error

    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        broken = nn.Sequential(nn.Linear(8, 8), Boom(error))
        n = hook_count(broken)
        if isinstance(error, KeyboardInterrupt):
            rows = engine.probe(broken, (x,), ["0"])
            assert rows.interrupted and len(rows.ids) == 1  # what was computed before it is kept
        else:
            with pytest.raises(RuntimeError):
                engine.probe(broken, (x,), ["0"])
        assert hook_count(broken) == n
    assert torch.is_grad_enabled()


def test_only_small_vectors_are_kept_no_activation():
    torch.manual_seed(5)
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(6)])
    refs = []
    hs = [m.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out))) for m in model]
    rows = engine.probe(model, (torch.randn(512, 256),), [str(i) for i in range(6)])
    for h in hs:
        h.remove()
    gc.collect()
    assert refs and all(r() is None for r in refs)  # every output freed once the next layer ran
    assert sum(t.numel() for t in rows.moments) == 7 * len(stats.MOMENTS)


class Channels(nn.Module):
    """An (N, C, H, W) conv, a channels-last MLP (permute, Linear, GELU, Linear) and (N, T, C) tokens."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1, self.act, self.fc2 = nn.Linear(6, 10), nn.GELU(), nn.Linear(10, 5)
        self.tokens = nn.Linear(5, 7)

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(self.conv(x).permute(0, 2, 3, 1))))  # (N, H, W, C)
        return self.tokens(y.flatten(1, 2))  # (N, T, C)


def test_the_channel_axis_follows_the_layout():
    torch.manual_seed(6)
    model, x = Channels(), torch.randn(4, 3, 5, 9)
    t = table(model, x, names=["conv", "fc1", "act", "fc2", "tokens"], output=False).set_index("module")
    assert t["channel_axis"].to_dict() == {"conv": 1, "fc1": 3, "act": 3, "fc2": 3, "tokens": 2}
    outs = by_hand(model, x, ["conv", "act", "tokens"])
    for name, axis in (("conv", 1), ("act", 3), ("tokens", 2)):
        assert t.loc[name, "chan_var"] == pytest.approx(moments64(outs[name], axis)["chan_var"], rel=1e-6)
    assert t.loc["act", "shape"] == "4x5x9x10"
    act_only = table(model, x, names=["act"], output=False)  # fc1 untapped: its layout is still followed
    assert act_only["channel_axis"].tolist() == [3]


# -- which modules are tapped ---------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.a, self.b = nn.Linear(w, w), nn.Linear(w, w)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


class Stage(nn.Module):
    def __init__(self, w, n):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(w) for _ in range(n)])

    def forward(self, x):
        return self.blocks(x)


def test_the_default_taps_are_the_repeated_blocks_innermost():
    flat = nn.Sequential(nn.Linear(4, 4), Block(4), Block(4), nn.Sequential(Block(4)), nn.Linear(4, 2))
    assert taps.blocks(flat) == ["1", "2", "3.0"]  # a stage of one block counts: the class repeats
    nested = nn.Sequential(Stage(4, 2), Stage(4, 1))  # stages repeat, and hold repeated blocks: those
    assert taps.blocks(nested) == ["0.blocks.0", "0.blocks.1", "1.blocks.0"]
    assert taps.blocks(nn.Sequential(Block(4), Block(4), nn.Linear(4, 2))) == ["0", "1"]  # twice is repeated
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    assert taps.select(plain, [], []) == ["0", "1", "2"]  # nothing repeated: every leaf


def test_layers_and_types_select_modules_and_name_what_they_miss():
    model = nn.Sequential(Stage(4, 2), Stage(4, 1))
    assert taps.select(model, ["*"], []) == [n for n, m in model.named_modules() if n and not list(m.children())]
    assert taps.select(model, ["0.blocks.?"], []) == ["0.blocks.0", "0.blocks.1"]
    assert taps.select(model, ["*.b"], []) == ["0.blocks.0.b", "0.blocks.1.b", "1.blocks.0.b"]
    assert taps.select(model, [], ["Block"]) == ["0.blocks.0", "0.blocks.1", "1.blocks.0"]
    assert taps.select(model, ["1.*"], ["Linear"]) == ["1.blocks.0.a", "1.blocks.0.b"]
    with pytest.raises(bncli.BncliError, match=r"--layers: 'layer9' matches no module; names are like 0, 0.blocks"):
        taps.select(model, ["layer9"], [])
    with pytest.raises(bncli.BncliError, match=r"--types: no module of class 'Conv2d'.*Block, Linear, Sequential"):
        taps.select(model, [], ["Conv2d"])


# -- interventions --------------------------------------------------------------------------------


def test_init_redraws_every_weight_with_its_fan_in_and_is_seeded():
    model = nn.Sequential(nn.Linear(400, 300), nn.Conv2d(20, 30, 5))
    net = engine.relu_net(api.load("probe", model="a.py:f"))
    interventions.init_weights(model, "kaiming", net, seed=1)
    assert model[0].weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert model[1].weight.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    first = model[0].weight.clone()
    interventions.init_weights(model, "kaiming", net, seed=1)
    assert torch.equal(first, model[0].weight)
    with interventions.kept(model):
        interventions.init_weights(model, "orthogonal", net, seed=2)
    assert torch.equal(first, model[0].weight)


@pytest.mark.parametrize(
    "swap,shape,reference",
    [
        ("batchnorm:groupnorm", (4, 64, 3, 3), lambda: nn.GroupNorm(32, 64)),
        ("batchnorm:layernorm", (4, 64, 3, 3), None),
        ("batchnorm:none", (4, 64, 3, 3), lambda: nn.Identity()),
        ("layernorm:rmsnorm", (4, 7, 64), lambda: nn.RMSNorm(64, eps=1e-5)),
        ("layernorm:batchnorm", (4, 7, 64), None),
    ],
)
def test_swap_norm_matches_torchs_modules_and_puts_the_norm_back(swap, shape, reference):
    torch.manual_seed(7)
    src = nn.BatchNorm2d(64) if swap.startswith("batchnorm") else nn.LayerNorm(64)
    model = nn.Sequential(nn.Identity(), src).train()
    x = torch.randn(shape) * 3 + 1
    with interventions.swapped(model, swap) as n:
        assert n == 1 and model[1] is not src
        got = model(x)
    assert model[1] is src
    if reference is not None:
        want = reference()(x)
    elif swap == "batchnorm:layernorm":  # over the channels of each pixel
        want = nn.functional.layer_norm(x.movedim(1, -1), (64,)).movedim(-1, 1)
    else:  # batch statistics per channel of (N, T, C) tokens
        want = nn.BatchNorm1d(64)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError), interventions.swapped(model, swap):
        raise RuntimeError
    assert model[1] is src
    with pytest.raises(bncli.BncliError, match="--swap-norm: groupnorm:none: this model has no groupnorm module"):
        with interventions.swapped(model, "groupnorm:none"):
            pass


# -- the command ----------------------------------------------------------------------------------


def read(cli, name):
    d = cli.out / "probe" / name
    return pd.read_csv(d / "probe.csv"), json.loads((d / "meta.json").read_text())


def test_probe_a_user_file_through_the_cli(cli, model_file):
    r = cli("probe", model_file, "--input-shape", "16", "--batch-size", "32", "--device", "cpu", "--name", "a",
            "--grads", "--model-arg", "width=16", "--model-arg", "blocks=4")  # fmt: skip
    assert r.exit_code == 0, r.output
    t, meta = read(cli, "a")
    assert t["module"].tolist() == ["1", "2", "3", "4", taps.OUTPUT]
    assert t.columns.tolist() == stats.COLUMNS
    assert meta["status"] == "ok" and meta["taps"] == 5 and meta["input_shape"] == [16]
    assert t["erank"].isna().all() and t["grad_std"].notna().all()
    assert "std over 5 taps" in r.output and "(output)" in r.output
    assert (cli.out / "probe" / "a" / "config.yaml").read_text().startswith("study: probe\nmodel: my_model.py:build\n")
    again = cli("probe", "--config", cli.out / "probe" / "a" / "config.yaml", "--name", "b")  # MODEL from the file
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(t, read(cli, "b")[0])  # seeded: the same numbers


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "Error: MODEL: give the model to probe, like torchvision:resnet18 or my_model.py:build"),
        (["resnet18"], "Error: MODEL: must be SOURCE:NAME, one of: torchvision:NAME"),
        (["my_model.py:nothing"], "Error: MODEL: my_model.py:nothing: my_model.py has no function nothing"),
        (["nofile.py:build"], "Error: MODEL: nofile.py:build: no file nofile.py"),
        (["my_model.py:build", "--model-arg", "width"], "Error: --model-arg: must be KEY=VALUE like n_layer=48"),
        (["my_model.py:build", "--swap-norm", "batchnorm:cheese"], "Error: --swap-norm: must be FROM:TO with FROM"),
        (["my_model.py:build", "--input-shape", "16", "--init", "kaimnig"], "(did you mean 'kaiming'?)"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(cli, model_file, args, message):
    r = cli("probe", *args, "--device", "cpu")
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [r.output.strip()] and message in r.output, r.output
    assert not (cli.out / "probe").exists()


def test_a_missing_or_broken_optional_package_says_what_to_install(cli, tmp_path, monkeypatch):
    r = cli("probe", "timm:resnet50", "--device", "cpu") if "timm" not in sys.modules else None
    if r is not None and not _importable("timm"):
        assert r.exit_code == 2 and "MODEL: timm:resnet50 needs timm, which is not installed" in r.output
        assert "pip install -c constraints-vision.txt -e '.[dev,vision]'" in r.output
    fake = tmp_path / "site" / "transformers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    r = cli("probe", "hf:gpt2", "--device", "cpu")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "installed but does not import beside torch" in lines[0], r.output
    assert "operator torchvision::nms does not exist" in lines[0] and ".venv-vision/bin/pip install" in lines[0]


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_layer_glob_that_matches_nothing_fails_the_run_in_one_line(cli, model_file):
    r = cli("probe", model_file, "--input-shape", "16", "--device", "cpu", "--layers", "layer9.*", "--name", "x")
    assert r.exit_code == 1 and "Error: --layers: 'layer9.*' matches no module; names are like 0, 1, 1.lin" in r.output
    assert json.loads((cli.out / "probe" / "x" / "meta.json").read_text())["status"] == "failed"


def test_probe_is_a_study_sweeps_show_compare_and_plot_work(cli, model_file, tmp_path):
    r = cli("sweep", "--study", "probe", "--set", f"model={model_file}", "--set", "input_shape=16",
            "--set", "device=cpu", "--grid", "swap_norm=none,batchnorm:none", "--grid", "model_arg=blocks=2,blocks=3",
            "--seeds", "0-1", "--out", tmp_path / "sw", "--no-progress")  # fmt: skip
    assert r.exit_code == 0, r.output
    (d,) = (tmp_path / "sw" / "sweeps").iterdir()  # a flag-built sweep: its keys and a hash
    assert d.name.startswith("probe-swap_norm-model_arg-")
    summary = pd.read_csv(d / "summary.csv")
    assert len(summary) == 2 * 2 * (3 + 4) and set(summary["status"]) == {"ok"}
    agg = pd.read_csv(d / "aggregate.csv")
    assert (agg["seeds"] == 2).all() and "module" not in agg and "std_mean" in agg
    assert "8 runs: 8 ok, 0 diverged, 0 failed" in r.output and (d / "probe.png").exists()
    runs = sorted((d / "runs").iterdir())
    shown = cli("show", runs[0])
    assert shown.exit_code == 0 and "(output)" in shown.output, shown.output
    cmp = cli("compare", runs[0], runs[2])
    assert cmp.exit_code == 0 and "swap_norm" in cmp.output, cmp.output
    out = tmp_path / "p.png"
    assert cli("plot", *runs[:3:2], "--out", out).exit_code == 0 and out.stat().st_size > 10_000
    listed = cli("runs", tmp_path / "sw", "--study", "probe")
    assert listed.exit_code == 0 and "probe" in listed.output


def test_the_api_runs_probe_and_saves_it(model_file, tmp_path):
    r = bncli.probe(model=model_file, input_shape=[16], device="cpu", erank=True)
    assert r.status == "ok" and r.table["erank"].between(1, 16).all()
    saved = r.save(tmp_path / "out", name="api")
    assert bncli.open_run(saved).table["std"].tolist() == pytest.approx(r.table["std"].tolist())
