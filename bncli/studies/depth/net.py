"""The depth study's networks: the frozen spec they are built from, the interface every
architecture implements, and the registry of architectures.

    net = Net.of(cfg); arch = net.arch_module(); step = arch.step(net, device)

An architecture is one module (mlp.py, conv.py, resnet.py, transformer.py) and one line in
ARCHS. It knows the shapes of its input and weights, one layer's step, its memory and MAC
estimates, its id columns and its theory; nothing else in the study switches on its name. Modules load on first
use, so the registry's names and help cost nothing to import.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union, cast

from bncli.runtime import Stream, draw_dtype, generator, torch_dtype
from bncli.studies.depth.components import ACTIVATIONS, INITS, NORMS, Activation, Init, Norm

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    from bncli.lazy import lazy

    torch = lazy("torch")

# architecture (its module in this package) -> what --help and docs/configs.md say of it
ARCHS: dict[str, str] = {
    "mlp": "Linear(bias=False) -> norm -> activation, the notebook's",
    "conv": "Conv2d(C, C, k, padding k // 2, bias=False) -> norm -> activation on (batch, C, H, W) maps (see padding)",
    "resnet": "pre-activation (v2) residual blocks in stages; transitions halve H, W and double C",
    "transformer": "self-attention and MLP blocks on (batch, tokens, width) token matrices, pre- or post-norm",
}

# a layer's weight, or a block's weights (tensors; None where a block has no such weight) and
# constants (floats: an NF-ResNet block's beta); only the tensors are weights, with gradients
Weight = Union["torch.Tensor", tuple[Any, ...]]
Step = Callable[["torch.Tensor", Any], Any]  # (x, weight) -> output, or (output, branch output)


@dataclass(frozen=True)
class Net:
    """What a depth-study network is made of: no device, no flags, nothing but the network."""

    arch: str
    depth: int
    width: int
    batch_size: int
    channels: int
    image_size: int
    kernel_size: int
    stages: int
    blocks: int
    init: Init
    init_std: float
    init_gain: float
    norm: Norm
    groups: int
    bn_mode: str
    activation: Activation
    negative_slope: float
    order: str
    residual: float
    dtype: str
    seed: int
    tokens: int
    heads: int
    mlp_ratio: int
    causal: bool
    norm_position: str
    ws: str
    nf_beta: bool
    skipinit: bool
    padding: str  # the convs' border: "zeros" or "circular"

    @property
    def skip(self) -> bool:
        """Is there a skip connection: `residual` alpha > 0, or SkipInit's (alpha 0 at init)."""
        return bool(self.residual) or self.skipinit

    @classmethod
    def of(cls, cfg: Any, **changes: Any) -> Net:
        """The network of a config (any object with these fields: the depth study's config), the
        component names made records."""
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)} | changes
        records: dict[str, Mapping[str, Any]] = {"init": INITS, "norm": NORMS, "activation": ACTIVATIONS}
        return cls(**{k: records[k][v] if k in records and isinstance(v, str) else v for k, v in values.items()})

    def arch_module(self) -> Arch:
        return architecture(self.arch)


class Arch(Protocol):
    """What every module in ARCHS declares."""

    IDS: list[str]  # the id columns after `layer` (a conv or resnet row's `stage`)
    BRANCH: bool  # does a step return (output, branch output): a residual branch's statistics
    SMALLER: str  # the flags that make a run smaller, for a too-large refusal
    RESIDUAL: float  # the residual alpha when the config leaves it to the architecture

    # refuse with ValueError; the fields it sets (resnet: depth). `given`: the fields the user gave
    def check(self, net: Net, given: set[str]) -> dict[str, Any]: ...

    def features(self, net: Net) -> tuple[int, str, int]: ...  # (channels, the field setting them, pixels)

    def input_shape(self, net: Net) -> tuple[int, ...]: ...

    def make_weight(self, net: Net, layer: int, device: torch.device) -> Weight: ...

    def step(self, net: Net, device: torch.device) -> Step: ...

    def stage(self, net: Net, layer: int) -> int: ...  # for the IDS column

    def rows(self, x: torch.Tensor) -> torch.Tensor: ...  # an output as (samples..., channels)

    # one layer's (samples, channels) rows as the (k, m, channels) matrices whose effective rank
    # and token cosine are averaged over k: the whole output (k = 1), or a transformer's samples
    def matrices(self, net: Net, rows: torch.Tensor) -> torch.Tensor: ...

    # the network's output from the last layer's, which --grads contracts with its cotangent: the
    # last layer's own (plain_readout), or a pre-LN transformer's final norm
    def readout(self, net: Net, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]: ...

    def output_elements(self, net: Net) -> int: ...  # values in the largest layer output

    def weight_elements(self, net: Net) -> int: ...  # values in the largest layer's weights

    def layer_macs(self, net: Net) -> int: ...  # multiply-adds of the largest layer

    def activations(self, net: Net) -> int: ...  # outputs a forward step holds at once (memory)

    def sizes(self, net: Net) -> str: ...  # the sizes, for messages

    def held(self, net: Net) -> str: ...  # one layer's weights, for messages

    # predicted std of every layer's output; an architecture with more theory columns (stats.py,
    # kind "theory", conv's theory_chan_sq_mean) has a function of each one's name
    def theory_std(self, net: Net) -> np.ndarray: ...


def architecture(name: str) -> Arch:
    """The module of architecture `name`, imported on first use."""
    if name not in ARCHS:
        raise KeyError(name)
    return cast(Arch, importlib.import_module(f"{__package__}.{name}"))


def weights(w: Weight) -> list[torch.Tensor]:
    """The tensors of a layer's weight: the weight itself, or a block's (its None and constants left out)."""
    return [t for t in (w if isinstance(w, tuple) else (w,)) if isinstance(t, torch.Tensor)]


def plain_readout(net: Net, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Arch.readout of an architecture whose output is its last layer's."""
    return lambda x: x


def whole(net: Net, rows: torch.Tensor) -> torch.Tensor:
    """Arch.matrices of an architecture whose whole output is one matrix (mlp, conv, resnet)."""
    return rows[None]


def draw(net: Net, shape: tuple[int, ...], index: int, device: torch.device) -> torch.Tensor:
    """One weight of `shape`, drawn by the init from its own (seed, index) generator, on `device`.

    bfloat16 weights are drawn in float32 and rounded, since some inits (orthogonal's QR)
    have no bfloat16 kernel; float64 is drawn in float64.
    """
    w = torch.empty(shape, device=device, dtype=draw_dtype(net.dtype))
    net.init.fill(w, generator(device, net.seed, Stream.WEIGHT, index), net)
    return w.to(torch_dtype(net.dtype))


def make_input(net: Net, device: torch.device) -> torch.Tensor:
    """The seeded N(0, 1) input, of the architecture's input shape."""
    g = generator(device, net.seed, Stream.INPUT)
    shape = net.arch_module().input_shape(net)
    return torch.randn(shape, generator=g, device=device, dtype=draw_dtype(net.dtype)).to(torch_dtype(net.dtype))


def make_cotangent(net: Net, device: torch.device, shape: tuple[int, ...]) -> torch.Tensor:
    """The fixed N(0, 1) tensor the last layer's output (of `shape`) is contracted with for --grads."""
    g = generator(device, net.seed, Stream.GRAD)
    return torch.randn(shape, generator=g, device=device, dtype=draw_dtype(net.dtype)).to(torch_dtype(net.dtype))


def layer(
    net: Net,
    act: Callable[[torch.Tensor], torch.Tensor],
    norm: Callable[[torch.Tensor], torch.Tensor],
    lin: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Step:
    """x, w -> act(norm(lin(x, w))), the notebook's Linear(bias=False) -> norm -> activation with
    any linear map; `order` linear-act-norm swaps norm and activation; with a skip connection
    (`residual` alpha > 0, or SkipInit's alpha 0) it returns x + alpha * f(x) instead of f(x)."""
    if net.order == "linear-norm-act":
        f = lambda x, w: act(norm(lin(x, w)))  # noqa: E731
    else:
        f = lambda x, w: norm(act(lin(x, w)))  # noqa: E731
    if net.skip:
        alpha = net.residual
        return lambda x, w: x + alpha * f(x, w)
    return f
