"""bncli probe on torchvision, timm and Hugging Face models (the vision extra: make test-vision):
each model the issue names runs from the command line, and each trap is checked on a real model
against hooks written by hand. Skipped, with the reason, where the extra is not installed."""

import importlib
import os

import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded: models come from their config classes
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _missing() -> str | None:
    for name in ("torchvision", "timm", "transformers"):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - not installed, or installed but not importable beside this torch
            return f"needs the vision extra ({name}: {type(e).__name__}); run make test-vision"
    return None


pytestmark = [pytest.mark.vision, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

from helpers import by_hand, hook_count, moments64  # noqa: E402

from bncli.studies.probe import engine, taps  # noqa: E402

SMALL = ["--device", "cpu", "--batch-size", "4"]


def run(cli, *args, name="r"):
    r = cli("probe", args[0], *SMALL, *args[1:], "--name", name)  # a flag given twice: the last wins
    assert r.exit_code == 0, r.output
    return pd.read_csv(cli.out / "probe" / name / "probe.csv"), r.output


def built(text, *args):
    torch.manual_seed(0)
    from bncli.studies.probe import models

    return models.build(text, list(args)).train()


def test_torchvision_resnet18_taps_its_blocks(cli):
    t, out = run(cli, "torchvision:resnet18", "--input-shape", "3,64,64", "--batch-size", "8")
    names = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert t["module"].tolist() == [*names, taps.OUTPUT]
    assert (t["type"][:8] == "BasicBlock").all() and t["shape"][0] == "8x64x16x16" and t["channel_axis"][0] == 1
    assert "std over 9 taps" in out


def test_resnet_bn1_is_read_inside_the_hook_not_after_its_inplace_relu():
    model = built("torchvision:resnet18")
    x = torch.randn(8, 3, 64, 64)
    after = {}
    h = model.bn1.register_forward_hook(lambda m, a, out: after.update(out=out))
    with torch.no_grad():
        model(x)
    h.remove()
    assert (after["out"] == 0).float().mean() > 0.4  # the trap: read after the forward, ReLU has been
    inside = by_hand(model, x, ["bn1"])["bn1"]
    t = engine.probe(model, (x,), ["bn1"], output=False).table(False, False)
    assert t["std"][0] == pytest.approx(moments64(inside, 1)["std"], rel=1e-6)
    assert t["std"][0] == pytest.approx(1.0, abs=0.01) and t["zero_fraction"][0] == 0


def test_timm_nf_resnet50_leaves_no_hook_and_gives_the_same_numbers_twice(cli):
    model = built("timm:nf_resnet50")
    x = torch.randn(2, 3, 64, 64)
    before = hook_count(model)
    names = taps.select(model, [], [])
    assert len(names) == 16 and names[0] == "stages.0.0"
    first = engine.probe(model, (x,), names, grads=True).table(False, True)
    assert hook_count(model) == before
    second = engine.probe(model, (x,), names, grads=True).table(False, True)
    pd.testing.assert_frame_equal(first, second)
    t, _ = run(cli, "timm:nf_resnet50", "--input-shape", "3,64,64")
    assert len(t) == 17 and t["std"].notna().all()


def test_timm_convnext_channels_last_mlp_reduces_over_the_right_axes(cli):
    model = built("timm:convnext_tiny")
    x = torch.randn(2, 3, 64, 64)
    blocks = taps.select(model, [], [])
    assert len(blocks) == 18 and blocks[0] == "stages.0.blocks.0"  # the blocks, not the stages holding them
    leaves = ["stages.0.blocks.0.conv_dw", "stages.0.blocks.0.norm", "stages.0.blocks.0.mlp.fc1",
              "stages.0.blocks.0.mlp.act"]  # fmt: skip
    t = engine.probe(model, (x,), leaves, output=False).table(False, False).set_index("module")
    assert t["channel_axis"].tolist() == [1, 3, 3, 3]  # NCHW conv, then NHWC: channels last
    outs = by_hand(model, x, leaves)
    for name, axis in zip(leaves, [1, 3, 3, 3], strict=True):
        assert t.loc[name, "chan_var"] == pytest.approx(moments64(outs[name], axis)["chan_var"], rel=1e-5)
    t, _ = run(cli, "timm:convnext_tiny", "--input-shape", "3,64,64", "--layers", "stages.0.blocks.0.*")
    assert t["channel_axis"].tolist()[:8] == [1, 3, 3, 3, 3, 3, 3, 3]  # then the shortcut, on the NCHW input: 1
    assert t["channel_axis"].tolist()[8:] == [1] * (len(t) - 8)


def test_torchvision_vit_tokens_and_tuple_outputs(cli):
    t, _ = run(cli, "torchvision:vit_b_16", "--batch-size", "2")
    assert t["module"][0] == "encoder.layers.encoder_layer_0" and len(t) == 13
    assert t["shape"][0] == "2x197x768" and t["channel_axis"][0] == 2  # (N, T, C) tokens: the last axis
    attn = "encoder.layers.encoder_layer_0.self_attention"
    t, _ = run(cli, "torchvision:vit_b_16", "--batch-size", "2", "--layers", attn, name="attn")
    assert t["output"].tolist() == ["out[0]"] and t["channel_axis"].tolist() == [2]  # (output, weights): the first


def test_hf_gpt2_from_its_config_with_model_args(cli):
    t, out = run(cli, "hf:gpt2", "--model-arg", "n_layer=24", "--batch-size", "2", "--seq-len", "16", "--grads")
    assert t["module"].tolist() == [f"h.{i}" for i in range(24)] + [taps.OUTPUT]
    assert t["output"].iloc[-1] == "out.last_hidden_state" and t["shape"].iloc[-1] == "2x16x768"
    assert t["grad_std"].notna().all() and t["channel_axis"].eq(2).all()


def test_a_user_file_runs_in_the_vision_set(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_model.py").write_text(
        "import torchvision\n\ndef build(classes=10):\n    return torchvision.models.resnet18(num_classes=classes)\n"
    )
    t, _ = run(cli, "my_model.py:build", "--input-shape", "3,32,32")
    assert len(t) == 9 and t["std"].notna().all()


def test_swap_norm_and_init_on_a_resnet(cli):
    t, out = run(cli, "torchvision:resnet18", "--input-shape", "3,32,32", "--swap-norm", "batchnorm:none")
    assert "swapped 20 norms" in out
    bn, _ = run(cli, "torchvision:resnet18", "--input-shape", "3,32,32", name="bn")
    assert (t["std"] - bn["std"]).abs().min() > 1e-3 * bn["std"].min()  # every tap after the first norm changes
    k, _ = run(cli, "torchvision:resnet18", "--input-shape", "3,32,32", "--init", "kaiming", "--grads", name="k")
    assert k["grad_std"].notna().all() and not k["std"].equals(bn["std"])
