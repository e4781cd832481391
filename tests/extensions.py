"""One of each component a researcher adds to the depth study, each one record in its registry:

    NORMS.register(PIXELNORM); INITS.register(SPARSE); stats.STATS.append(SQ_MEAN)

- a norm: `pixelnorm` (Karras et al. 2018, "Progressive growing of GANs"): each sample, at each
  pixel, scaled to unit mean square over its channels; its theory is rmsnorm's on an MLP;
- an init: `sparse`: a quarter of the entries kept, N(0, gain^2 / (fan_in / 4)), so the weight
  variance is He's;
- a statistic: `sq_mean`, the mean of x^2 (which is chan_sq_mean + chan_var), on every layer.

An architecture is one module and one line in ARCHS (tests/tied_arch.py), a study one module and
one line in REGISTRY (tests/toy_study.py). tests/test_extensions.py adds them all, then runs each
through the command line and a sweep.
"""

from __future__ import annotations

import torch

from bncli.studies.depth import components, stats
from bncli.studies.depth.components import Init, Norm


def _pixelnorm(net, device, dtype):
    return lambda x: x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)


PIXELNORM = Norm(
    "pixelnorm",
    "each sample, at each pixel, to unit mean square over its channels (Karras et al. 2018)",
    build=_pixelnorm,
    group=lambda net, channels, pixels: (channels, False),  # like rmsnorm: uncentred, over the channels
)

KEPT = 0.25  # the share of a sparse weight's entries that are not zero


def _sparse(w, g, net):
    keep = torch.rand(w.shape, generator=g, device=w.device, dtype=w.dtype) < KEPT
    std = net.activation.gain(net) / (KEPT * components.fan_in(w)) ** 0.5
    return w.copy_(torch.randn(w.shape, generator=g, device=w.device, dtype=w.dtype).mul_(std) * keep)


SPARSE = Init(
    "sparse",
    "a quarter of the entries kept, N(0, gain^2 / (fan_in / 4)): He's variance",
    fill=_sparse,
    variance=lambda net, n: net.activation.gain(net) ** 2 / n,
)

SQ_MEAN = stats.Stat(
    "sq_mean",
    "chunk",
    "`mean(x^2)`: `chan_sq_mean + chan_var`",
    compute=lambda c: c.xs.to(torch.float64).square().mean((1, 2)),
)
