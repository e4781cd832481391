"""The notebook's MLP: `depth` x (Linear(width, width, bias=False) -> norm -> activation).

bncli depth-study --arch mlp --width 256 --depth 100
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from bncli.runtime import torch_dtype
from bncli.studies.depth import theory
from bncli.studies.depth.net import Net, Step, draw, layer, plain_readout, whole

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:  # torch loads on first use: `bncli runs` resolves a config's defaults (its arch's check) without it
    from bncli.lazy import lazy

    torch, F = lazy("torch"), lazy("torch.nn.functional")

IDS: list[str] = []
BRANCH = False
RESIDUAL = 0.0  # a plain stack unless --residual says
SMALLER = "--width, --batch-size or --depth"


def check(net: Net, given: set[str]) -> dict[str, Any]:
    return {}


def features(net: Net) -> tuple[int, str, int]:
    return net.width, "width", 1


def input_shape(net: Net) -> tuple[int, ...]:
    return net.batch_size, net.width


def make_weight(net: Net, layer: int, device: torch.device) -> torch.Tensor:
    return draw(net, (net.width, net.width), layer, device)


def step(net: Net, device: torch.device) -> Step:
    norm = net.norm.build(net, device, torch_dtype(net.dtype))
    return layer(net, net.activation.build(net), norm, F.linear)


def stage(net: Net, layer: int) -> int:
    return 0


def rows(x: torch.Tensor) -> torch.Tensor:
    return x  # (batch, width): a sample per row already


readout = plain_readout
matrices = whole  # erank of the (batch, width) matrix


def output_elements(net: Net) -> int:
    return net.batch_size * net.width


def weight_elements(net: Net) -> int:
    return net.width * net.width


def layer_macs(net: Net) -> int:
    return net.batch_size * net.width * net.width


def activations(net: Net) -> int:
    return 4  # the input, the linear map's output, the norm's and the activation's


def sizes(net: Net) -> str:
    return f"depth {net.depth}, width {net.width}, batch_size {net.batch_size}"


def held(net: Net) -> str:
    return f"{net.width}x{net.width}"


def theory_std(net: Net) -> np.ndarray:
    """Predicted std of each layer's output, layers 0 .. depth-1 (inf once it overflows).

    Each output h = x + alpha * f(x) (no skip connection: h = f(x)) is tracked through its mean m
    and second moment q per entry; the pre-activation z = W x has variance n sigma_w^2 q.
    """
    act = net.activation.build(net)
    n, s2w, alpha = net.width, net.init.variance(net, net.width), net.residual
    group = net.norm.group(net, net.width, 1)
    shrink = net.norm.scale(net)  # eval BN at init divides by sqrt(1 + eps)
    post_norm = net.order == "linear-norm-act"
    fixed = theory.sphere_moments(act, *group) if group is not None and post_norm else None
    m, q = 0.0, 1.0  # the N(0, 1) input
    out = np.empty(net.depth)
    for i in range(net.depth):
        v = n * s2w * q  # variance of z = W x
        if not math.isfinite(v):
            out[i:] = math.inf
            break
        if post_norm:  # f = act(norm(z))
            mu, s = fixed if fixed is not None else net.activation.moments(net, v * shrink)
        else:  # f = norm(act(z))
            mu, s = net.activation.moments(net, v)
            if group is not None and group[1]:
                mu, s = 0.0, 1.0  # centred and scaled to unit variance over the group
            elif group is not None:  # rmsnorm: unit mean square, mean E act / rms act
                mu, s = (mu / math.sqrt(s) if s > 0 else 0.0), 1.0
            else:
                mu, s = mu * math.sqrt(shrink), s * shrink
        if net.skip:
            m, q = m + alpha * mu, q + 2 * alpha * m * mu + alpha * alpha * s
        else:
            m, q = mu, s
        out[i] = math.sqrt(max(q - m * m, 0.0))
    return out
