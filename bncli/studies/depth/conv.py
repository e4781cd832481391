"""A conv stack: `depth` x (Conv2d(C, C, k, padding k // 2, bias=False) -> norm -> activation) on
(batch, C, H, W) feature maps; the padding zeros (torch's default) or circular.

    bncli depth-study --arch conv --channels 64 --image-size 16 --kernel-size 3 --padding circular
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
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

IDS = ["stage"]  # 0 for every layer: the column a ResNet's rows share
BRANCH = False
RESIDUAL = 0.0
SMALLER = "--channels, --image-size, --batch-size or --depth (--stages, --blocks)"


def check(net: Net, given: set[str]) -> dict[str, Any]:
    if net.kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (padding kernel_size // 2 keeps H and W), got {net.kernel_size}")
    smallest = net.image_size // 2 ** (net.stages - 1) if net.arch == "resnet" else net.image_size
    if net.padding == "circular" and net.kernel_size // 2 > smallest:
        raise ValueError(  # torch wraps a map around at most once
            f"padding circular needs kernel_size // 2 ({net.kernel_size // 2}) at most the smallest map's size, "
            f"{smallest}: use padding zeros, a smaller kernel_size or a larger image_size"
        )
    return {}


def conv2d(net: Net) -> Callable[..., torch.Tensor]:
    """(x, w, stride=1) -> the k x k conv of x, padded by k // 2 as `padding` says: zeros
    (F.conv2d's own), or circular (nn.Conv2d's padding_mode="circular": the map wrapped around)."""
    pad = net.kernel_size // 2
    if net.padding == "zeros":
        return partial(F.conv2d, padding=pad)

    def circular(x: torch.Tensor, w: torch.Tensor, stride: int = 1) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad,) * 4, mode="circular"), w, stride=stride)

    return circular


def features(net: Net) -> tuple[int, str, int]:
    return net.channels, "channels", net.image_size**2


def input_shape(net: Net) -> tuple[int, ...]:
    return net.batch_size, net.channels, net.image_size, net.image_size


def make_weight(net: Net, layer: int, device: torch.device) -> torch.Tensor:
    c, k = net.channels, net.kernel_size
    return draw(net, (c, c, k, k), layer, device)


def step(net: Net, device: torch.device) -> Step:
    norm = net.norm.build(net, device, torch_dtype(net.dtype))
    return layer(net, net.activation.build(net), norm, conv2d(net))


def stage(net: Net, layer: int) -> int:
    return 0


def rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as an (N, H, W, C) view: copied into a chunk, the (samples, channels) matrix
    of the statistics, each pixel of each image a sample, as Brock et al. count them."""
    return x.permute(0, 2, 3, 1)


readout = plain_readout
matrices = whole  # erank of the (N H W, C) matrix


def output_elements(net: Net) -> int:
    return net.batch_size * net.channels * net.image_size**2


def weight_elements(net: Net) -> int:
    return net.channels * net.channels * net.kernel_size**2


def layer_macs(net: Net) -> int:
    return output_elements(net) * net.channels * net.kernel_size**2


def activations(net: Net) -> int:
    return 8  # a conv's padded input and workspace besides the norm's and activation's outputs


def sizes(net: Net) -> str:
    return (
        f"conv: depth {net.depth}, channels {net.channels}, image_size {net.image_size}, "
        f"kernel_size {net.kernel_size}, batch_size {net.batch_size}"
    )


def held(net: Net) -> str:
    return f"up to {weight_elements(net)} values"


def _channel_theory(net: Net) -> tuple[np.ndarray, np.ndarray]:
    """(theory_chan_sq_mean, theory_chan_var) of every layer, from the per-pixel second-moment
    maps (theory.Maps, docs/theory.md): after a norm the pre-activation at pixel p has variance
    z(p) (mean 1 over the pixels), so a relu-like activation gives it mean c1 sqrt(z(p)) and
    second moment c2 z(p); every channel's mean is then c1 mean(sqrt z), its variance over N, H
    and W mean(c2 z) less that squared. nan for an activation that is not relu-like, a residual
    stack or the linear-act-norm order."""
    maps = theory.Maps(net)
    sq, var = np.full(net.depth, np.nan), np.full(net.depth, np.nan)
    if not maps.ok or net.skip or net.order != "linear-norm-act":
        return sq, var
    m = np.ones((net.image_size, net.image_size))  # the N(0, 1) input
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(net.depth):
            z = maps.norm(maps.conv(m, net.channels))
            m = maps.c2 * z
            sq[i] = (maps.c1 * np.sqrt(z).mean()) ** 2
            var[i] = max(m.mean() - sq[i], 0.0)
    return sq, var


def theory_std(net: Net) -> np.ndarray:
    """Predicted std of each layer's output (docs/theory.md): every channel has the same
    predicted mean, so the std is the channel variance's square root."""
    return np.sqrt(_channel_theory(net)[1])


def _per_channel(net: Net, column: np.ndarray) -> np.ndarray:
    """A per-channel prediction where the norm takes out each channel's mean; nan elsewhere:
    without it the channels' means build up with depth (the positions become alike), which
    per-pixel maps do not follow (docs/theory.md)."""
    return column if net.norm.centres_channels(net) else np.full(net.depth, np.nan)


def theory_chan_sq_mean(net: Net) -> np.ndarray:
    return _per_channel(net, _channel_theory(net)[0])


def theory_chan_var(net: Net) -> np.ndarray:
    return _per_channel(net, _channel_theory(net)[1])
