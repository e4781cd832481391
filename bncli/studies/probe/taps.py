"""Which modules probe taps, which tensor of their output it reads, and along which channel axis.

    python -c "import torchvision as tv; from bncli.studies.probe import taps; print(taps.blocks(tv.models.resnet18()))"

The default taps are the blocks the structure shows as repeated: the children of a container
(nn.Sequential, nn.ModuleList) whose class, holding modules of its own, is the class of at
least two such children in the model (ResNet blocks, transformer layers, ConvNeXt blocks; a
stage of one block counts). Where such a block holds repeated blocks itself (timm's ConvNeXt
stages hold their blocks), the inner ones are taken. A model without any has every leaf
tapped. `--layers GLOB` taps the modules whose qualified names match, the innermost where one
holds another (so `*` is every leaf and `layer3.?` layer3's blocks); `--types` the modules of
those classes.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from bncli.errors import BncliError, show

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    from bncli.lazy import lazy

    torch, nn = lazy("torch"), lazy("torch.nn")

OUTPUT = "(output)"  # the row of the model's own output


def _container(m: nn.Module) -> bool:
    return isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def _leaf(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def blocks(model: nn.Module) -> list[str]:
    """The qualified names of the repeated blocks (see the module's docstring), in model order."""
    named = dict(model.named_modules())
    children = [
        (f"{name}.{c}" if name else c, child)
        for name, m in named.items()
        if _container(m)
        for c, child in m.named_children()
        if not _container(child) and not _leaf(child)
    ]
    counts = Counter(type(child) for _, child in children)
    found = [name for name, child in children if counts[type(child)] >= 2]
    return innermost(found)


def innermost(names: Sequence[str]) -> list[str]:
    """`names` without those that hold another of them."""
    chosen = set(names)
    return [n for n in names if not any(o != n and o.startswith(n + ".") for o in chosen)] if "" not in chosen else []


def select(model: nn.Module, layers: Sequence[str], types: Sequence[str]) -> list[str]:
    """The tapped modules' names: --layers and --types as the module's docstring says (both given:
    the modules of those types among the names the globs match); neither: the repeated blocks."""
    named = {name: m for name, m in model.named_modules() if name}
    if not layers and not types:
        return blocks(model) or [n for n, m in named.items() if _leaf(m)]
    if types:
        known = {type(m).__name__ for m in named.values()}
        unknown = [t for t in types if t not in known]
        if unknown:
            raise BncliError(
                f"--types: no module of class {show(unknown[0])} in this model; its classes: "
                + ", ".join(sorted(known)[:30])
                + (", ..." if len(known) > 30 else "")
            )
    picked = []
    for glob in layers:
        hits = [n for n in named if fnmatch.fnmatchcase(n, glob)]
        if not hits:
            raise BncliError(f"--layers: {show(glob)} matches no module; names are like {_examples(named)}")
        picked += [n for n in hits if n not in picked]
    if types:
        pool = picked if layers else list(named)
        picked = [n for n in pool if type(named[n]).__name__ in types]
        if not picked:
            raise BncliError(f"--types: no module of {', '.join(types)} among those --layers names")
        return picked
    return innermost([n for n in named if n in set(picked)])


def _examples(named: dict[str, Any]) -> str:
    names = list(named)
    picks = names[:3] + names[len(names) // 2 : len(names) // 2 + 2] + names[-2:]
    return ", ".join(dict.fromkeys(picks))


# -- the tensor of an output ----------------------------------------------------------------------


def find(out: Any, path: str = "out") -> tuple[str, torch.Tensor] | None:
    """(how to reach it, the tensor) of the first floating-point tensor in a module's output: the
    output itself (`out`), or inside tuples, lists, dicts and dataclasses (Hugging Face's
    ModelOutput): `out[0]`, `out.last_hidden_state`, `out['logits']`."""
    if isinstance(out, torch.Tensor):
        return (path, out) if out.is_floating_point() and out.numel() else None
    items: list[tuple[str, Any]]
    if is_dataclass(out) and not isinstance(out, type):
        items = [(f".{f.name}", getattr(out, f.name, None)) for f in fields(out)]
    elif isinstance(out, dict):
        items = [(f"[{k!r}]", v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(f"[{i}]", v) for i, v in enumerate(out)]
    else:
        return None
    for step, value in items:
        hit = find(value, path + step) if value is not None else None
        if hit is not None:
            return hit
    return None


# -- the channel axis -----------------------------------------------------------------------------

LAST = -1


def own_axis(m: nn.Module) -> int | None:
    """The channel axis a module's output has by what the module is: 1 for convolutions, batch,
    group and instance norms, pools and channels-first layer norms (LayerNorm2d); the last for
    maps over features (Linear, LayerNorm, RMSNorm, embeddings, attention, Hugging Face's
    Conv1D); None where it follows the input (activations, dropout, blocks)."""
    name = type(m).__name__
    first = (
        nn.modules.conv._ConvNd,
        nn.modules.batchnorm._NormBase,
        nn.GroupNorm,
        nn.modules.pooling._MaxPoolNd,
        nn.modules.pooling._AvgPoolNd,
        nn.modules.pooling._AdaptiveAvgPoolNd,
        nn.modules.pooling._AdaptiveMaxPoolNd,
    )
    if isinstance(m, first) or (isinstance(m, nn.LayerNorm) and name.endswith("2d")):
        return 1
    last = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.MultiheadAttention, *rms_classes())
    if isinstance(m, last) or name in ("Conv1D", "RMSNorm") or name.endswith("RMSNorm"):
        return LAST
    return None


def rms_classes() -> tuple[type, ...]:
    return (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()


def by_shape(t: torch.Tensor) -> int:
    """The channel axis of a tensor no module's kind tells: (N, C) and (N, C, H, W, ...) maps
    channels first, (N, T, C) tokens last."""
    return 2 if t.dim() == 3 else 1 if t.dim() >= 2 else 0


class Layouts:
    """The channel axis of each tensor seen in one forward pass, so that an activation or a block
    takes its input's (a GELU on a channels-last tensor is channels-last); a Permute module
    (torchvision's ConvNeXt) moves it. Tensors are held weakly: no activation is kept alive."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[weakref.ref, int]] = {}

    def of_input(self, args: Sequence[Any]) -> int | None:
        for a in args:
            if isinstance(a, torch.Tensor):
                hit = self._seen.get(id(a))
                return hit[1] if hit is not None and hit[0]() is a else None
        return None

    def axis(self, m: nn.Module, args: Sequence[Any], t: torch.Tensor) -> int:
        """`t`'s channel axis (from 0), t the output of module m called with args."""
        own = own_axis(m)
        if own is None:
            came = self.of_input(args)
            dims = getattr(m, "dims", None)
            if came is not None and type(m).__name__ == "Permute" and isinstance(dims, (list, tuple)):
                own = list(dims).index(came)
            elif came is not None and args and isinstance(args[0], torch.Tensor) and args[0].dim() == t.dim():
                own = came
            else:
                own = by_shape(t)
        axis = own % t.dim() if t.dim() else 0
        self._seen[id(t)] = (weakref.ref(t), axis)
        return axis


# --swap-norm: FROM matches these modules; TO builds what takes their place
FAMILIES = {
    "batchnorm": "BatchNorm1d/2d/3d (and their subclasses)",
    "layernorm": "LayerNorm (and channels-first LayerNorm2d)",
    "groupnorm": "GroupNorm",
    "rmsnorm": "RMSNorm (torch's, and classes named *RMSNorm)",
}
TARGETS = {
    "none": "nn.Identity: no normalisation",
    "batchnorm": "batch statistics per channel",
    "layernorm": "mean and variance over the channels of each position",
    "groupnorm": "GroupNorm, 32 groups (fewer where 32 does not divide the channels)",
    "rmsnorm": "RMS over the channels of each position, no centring",
}


def check_swap(value: Any) -> Any:
    """A --swap-norm value FROM:TO (or none); ValueError naming the choices."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return None
    if not isinstance(value, str):
        return value
    src, sep, dst = value.partition(":")
    if not sep or src not in FAMILIES or dst not in TARGETS or src == dst:
        raise ValueError(
            f"must be FROM:TO with FROM one of {', '.join(FAMILIES)} and TO another of {', '.join(TARGETS)} "
            f"(like batchnorm:groupnorm), or none (got {show(value)})"
        )
    return value
