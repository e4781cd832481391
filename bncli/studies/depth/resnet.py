"""A pre-activation (v2) ResNet whose layers are residual blocks, in stages (He et al. 2016,
"Identity mappings in deep residual networks").

    bncli depth-study --arch resnet --stages 3 --blocks 8 --norm none --residual 0.2

A block is h = act(norm(x)), f = conv(act(norm(conv(h)))), and x + alpha f; a transition block
(the first of every stage after the first) has both paths at stride 2 and conv1x1(h) as its
skip path, doubling the channels. A row of layers.csv is a block's output, on the skip path.
`--residual 0` leaves the skip path out (the block is f); `--skipinit` keeps it with alpha 0.

Normalizer-free ResNets (Brock et al. 2021, "Characterizing signal propagation to close the
performance gap in unnormalized ResNets"): `--ws scaled` standardizes every conv weight as it
is used (per output channel: zero mean, std gamma / sqrt(fan_in), gamma the activation's), and
`--nf-beta` gives each branch x / beta, beta^2 = 1 + k alpha^2 the skip path's variance after k
blocks of a stage (a transition's 1x1 conv on a unit-variance input restarts it at 1).

    bncli depth-study --arch resnet --norm none --ws scaled --nf-beta --residual 0.2
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from bncli.runtime import torch_dtype
from bncli.studies.depth import conv, theory
from bncli.studies.depth.net import Net, Step, draw

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:  # torch loads on first use: `bncli runs` resolves a config's defaults (its arch's check) without it
    from bncli.lazy import lazy

    torch, F = lazy("torch"), lazy("torch.nn.functional")

IDS = ["stage"]
BRANCH = True  # a step returns (output, branch output): branch_var
RESIDUAL = 1.0  # alpha: the identity skip, as in He et al.
SMALLER = conv.SMALLER
features, input_shape, rows, matrices, readout, output_elements, activations = (
    conv.features,
    conv.input_shape,
    conv.rows,
    conv.matrices,
    conv.readout,
    conv.output_elements,
    conv.activations,
)  # the input and the first stage are a conv stack's: the first stage holds the most values


def check(net: Net, given: set[str]) -> dict[str, Any]:
    """The depth is stages x blocks; the image must halve evenly at each transition."""
    conv.check(net, given)
    if net.image_size % 2 ** (net.stages - 1):
        raise ValueError(
            f"image_size must be divisible by 2^(stages - 1) = {2 ** (net.stages - 1)} "
            f"(each stage after the first halves it), got {net.image_size}"
        )
    if net.stages * net.blocks > 100_000 or net.stages > 32:
        raise ValueError("stages x blocks must be at most 100000, and stages at most 32")
    if "depth" in given and net.depth != net.stages * net.blocks:
        raise ValueError(
            f"depth is stages x blocks ({net.stages * net.blocks}) for arch resnet; give stages and blocks instead"
        )
    return {"depth": net.stages * net.blocks}


def stage_of(net: Net, layer: int) -> tuple[int, int, int]:
    """(stage, channels, image size) of a block: each stage after the first doubles the
    channels and halves H and W."""
    s = layer // net.blocks
    return s, net.channels * 2**s, net.image_size // 2**s


def stage(net: Net, layer: int) -> int:
    return stage_of(net, layer)[0]


def beta(net: Net, layer: int) -> float:
    """NF-ResNets' beta of block `layer` (1 without --nf-beta): the std of its input if every
    branch had unit variance. k blocks into a stage it is sqrt(1 + k alpha^2), and a transition
    (the first block of a later stage) sees the whole previous stage: sqrt(1 + blocks alpha^2)."""
    if not net.nf_beta:
        return 1.0
    s, k = divmod(layer, net.blocks)
    n = net.blocks if s > 0 and k == 0 else k
    return math.sqrt(1 + n * net.residual * net.residual)


def make_weight(net: Net, layer: int, device: torch.device) -> tuple[Any, ...]:
    """(conv1, conv2, the 1x1 skip conv or None, beta) of block `layer`: the branch's weights,
    the transition's skip conv (none without a skip path) and the block's NF beta."""
    s, c, _ = stage_of(net, layer)
    k = net.kernel_size
    c_in = c // 2 if s > 0 and layer % net.blocks == 0 else c  # a transition block widens
    skip = draw(net, (c, c_in, 1, 1), 3 * layer + 2, device) if c_in != c and net.skip else None
    conv1, conv2 = draw(net, (c, c_in, k, k), 3 * layer, device), draw(net, (c, c, k, k), 3 * layer + 1, device)
    return conv1, conv2, skip, beta(net, layer)


def standardize(w: torch.Tensor, gain: float) -> torch.Tensor:
    """Scaled WS of a conv weight: each output channel's weights less their mean, over their
    (biased) std times sqrt(fan_in), times `gain` (Brock et al.'s eq. 2; the nfnets code's,
    without its 1e-4 floor on var x fan_in, so the result does not depend on the init's scale)."""
    wf = w.float() if w.dtype == torch.bfloat16 else w
    mean = wf.mean((1, 2, 3), keepdim=True)
    var = (wf - mean).square().mean((1, 2, 3), keepdim=True)
    scale = gain * torch.rsqrt((var * wf[0].numel()).clamp_min(torch.finfo(wf.dtype).tiny))
    return ((wf - mean) * scale).to(w.dtype)


def step(net: Net, device: torch.device) -> Step:
    """x, (conv1, conv2, skip, beta) -> (x + alpha f, f), or in a transition block
    (conv1x1(h) + alpha f, f); (f, f) without a skip path. With --nf-beta the branch reads x / beta."""
    norm = net.norm.build(net, device, torch_dtype(net.dtype))
    act = net.activation.build(net)
    conv3, alpha = conv.conv2d(net), net.residual
    gain = net.activation.gamma(net)
    ws = standardize if net.ws == "scaled" else lambda w, gain: w

    def block(x: torch.Tensor, w: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        conv1, conv2, skip, b = w
        stride = 1 if conv1.shape[0] == conv1.shape[1] else 2  # a transition widens and halves
        h = act(norm(x if b == 1.0 else x / b))
        f = conv3(act(norm(conv3(h, ws(conv1, gain), stride=stride))), ws(conv2, gain))
        if not net.skip:
            return f, f
        shortcut = x if skip is None else F.conv2d(h, ws(skip, gain), stride=stride)
        return shortcut + alpha * f, f

    return block


def weight_elements(net: Net) -> int:
    """The last stage's block: two convs and its skip."""
    c, k2 = net.channels * 2 ** (net.stages - 1), net.kernel_size**2
    return 2 * c * c * k2 + c * c // 2


def layer_macs(net: Net) -> int:
    return output_elements(net) * net.channels * net.kernel_size**2 * 2


def sizes(net: Net) -> str:
    return (
        f"resnet: stages {net.stages}, blocks {net.blocks}, channels {net.channels}, image_size {net.image_size}, "
        f"kernel_size {net.kernel_size}, batch_size {net.batch_size}"
    )


def held(net: Net) -> str:
    return f"up to {weight_elements(net)} values"


def theory_std(net: Net) -> np.ndarray:
    """Predicted std of each block's output (docs/theory.md): a block adds its branch's map,
    times alpha^2, to the skip path's (theory.Maps); nan for an activation that is not relu-like.
    Scaled WS convs take out their input's mean (Maps.conv_ws); --nf-beta divides the branch's
    input map by beta^2."""
    maps = theory.Maps(net)
    out = np.full(net.depth, np.nan)
    if not maps.ok:
        return out
    ws = net.ws == "scaled"

    def conv(v: np.ndarray, c_in: int, k: int | None = None, stride: int = 1) -> np.ndarray:
        """The second-moment map of a conv of act(z), z symmetric with second-moment map v."""
        if ws:
            return maps.conv_ws(maps.c2 * v, maps.c1 * np.sqrt(v), c_in, k, stride)
        return maps.conv(maps.c2 * v, c_in, k, stride)

    m = np.ones((net.image_size, net.image_size))  # the N(0, 1) input
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(net.depth):
            s, c, _ = stage_of(net, i)
            transition = s > 0 and i % net.blocks == 0
            c_in = c // 2 if transition else c
            b = beta(net, i)
            h = maps.norm(m if b == 1.0 else m / (b * b))
            f = conv(maps.norm(conv(h, c_in, stride=2 if transition else 1)), c)
            if not net.skip:
                m = f
            else:
                skip = conv(h, c_in, k=1, stride=2) if transition else m
                m = skip + net.residual * net.residual * f
            out[i] = math.sqrt(m.mean()) if np.isfinite(m.mean()) else math.inf
    return out
