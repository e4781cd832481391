"""What several test modules share: config loading, reference networks, sweep files, file listings."""

import json
import re
from pathlib import Path

import torch
import yaml

from bncli import config, studies
from bncli.runtime import resolve_device
from bncli.studies.depth.net import Net
from bncli.studies.depth.net import make_input as _make_input

CPU = torch.device("cpu")
AUTO = resolve_device("auto")  # where a run without --device goes: cuda when this machine has it
CONFIGS = {name: studies.get(name).CONFIG for name in studies.names()}  # study -> its config model


def load(study, path=None, **flags):
    """A study's config, with `flags` given as on the command line."""
    return config.load(studies.get(study).CONFIG, path, **flags)


def run_depth(**kw):
    """(cfg, Result) of a depth study on the CPU, straight through the study module."""
    cfg = load("depth-study", device="cpu", **kw)
    return cfg, studies.get("depth-study").run(cfg, CPU)


def make_input(cfg, device=None):
    """The depth study's seeded input for config `cfg`."""
    return _make_input(Net.of(cfg), device or CPU)


def make_weight(cfg, layer, device=None):
    """Layer `layer`'s weight (a ResNet block's tuple) for config `cfg`, as the run draws it."""
    net = Net.of(cfg)
    return net.arch_module().make_weight(net, layer, device or CPU)


def reference(cfg, norm_module, act_module, grads=False):
    """The depth study's stack built from nn modules, with bncli's weights copied in:
    (outputs, linears). norm_module(cfg) builds one layer's norm."""
    x = make_input(cfg, CPU)
    outs, lins = [], []
    for i in range(cfg.depth):
        lin = torch.nn.Linear(cfg.width, cfg.width, bias=False, dtype=x.dtype)
        with torch.no_grad():
            lin.weight.copy_(make_weight(cfg, i, CPU))
        norm = norm_module(cfg)
        f = act_module(norm(lin(x))) if cfg.order == "linear-norm-act" else norm(act_module(lin(x)))
        x = x + cfg.residual * f if cfg.residual else f
        if grads:
            x.retain_grad()
        outs.append(x)
        lins.append(lin)
    return outs, lins


def sweep_file(tmp_path, name="s", study="depth-study", base=None, grid=None, seeds=(0,), **extra):
    """Write a sweep file `<tmp_path>/<name>.yaml` and return its path."""
    path = tmp_path / f"{name}.yaml"
    spec = {"study": study, "base": base or {}, "grid": grid or {}, "seeds": list(seeds), **extra}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_dirs(out, study):
    d = out / study
    return sorted(p for p in d.iterdir()) if d.exists() else []


def only_run(out, study):
    dirs = run_dirs(out, study)
    assert len(dirs) == 1, dirs
    return dirs[0]


def all_files(root):
    """Every path under root, relative, sorted ([] when root does not exist)."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")) if Path(root).exists() else []


def file_bytes(d):
    """Every file under d but meta.json (times differ) and the plots, as bytes."""
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(Path(d).rglob("*"))
        if p.is_file() and p.name != "meta.json" and p.suffix != ".png"
    }


def meta_of(run):
    return json.loads((run / "meta.json").read_text())


def table_rows(output):
    """The rows (header rows too) of the tables in a command's piped output, as lists of cells:
    piped tables are plain columns two or more spaces apart, and a cell holds at most single spaces."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]
    return [cells for cells in rows if len(cells) >= 2]


def column(output, name):
    """The cells under header `name`, in the table whose header has it."""
    rows = table_rows(output)
    i = next(k for k, cells in enumerate(rows) if name in cells)
    j = rows[i].index(name)
    return [cells[j] for cells in rows[i + 1 :] if len(cells) == len(rows[i])]


# -- probe: statistics and hooks written by hand -------------------------------------------------


def moments64(x: torch.Tensor, axis: int) -> dict[str, float]:
    """The statistics as the depth study defines them, written out in float64."""
    rows = x.double().movedim(axis, -1).reshape(-1, x.shape[axis])
    return {
        "mean": rows.mean().item(),
        "std": rows.std().item(),
        "abs_max": rows.abs().max().item(),
        "zero_fraction": (rows == 0).double().mean().item(),
        "chan_sq_mean": rows.mean(0).square().mean().item(),
        "chan_var": rows.var(0, unbiased=False).mean().item(),
    }


def by_hand(model, x, names):
    """Each named module's output, cloned inside a hand-written forward hook."""
    seen, handles = {}, []

    def keep(name):
        def hook(m, args, out):  # returns None: a hook's return value would replace the output
            seen[name] = out.detach().clone()

        return hook

    for name in names:
        handles.append(model.get_submodule(name).register_forward_hook(keep(name)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
