"""Analytic predictions for the depth study: the mean-field std of every layer's output.

    bncli depth-study --norm none --init kaiming --activation tanh   # theory_std column

The derivation is in docs/theory.md. In short, each layer's output h = x + alpha * f(x)
(alpha = 0: h = f(x)) is tracked through two numbers, its mean m and second moment q per
entry; the pre-activation z = W x has variance n sigma_w^2 q. f's moments come from a
Gaussian integral (no norm) or from the exact distribution of one normalised coordinate,
a scaled Beta, when f normalises over m values. Integrals are plain quadrature in float64.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from bncli.nets import EPS, activation, gauss_moments, kaiming_gain, stage_of
from bncli.nets import GAUSS_GRID as _GRID
from bncli.nets import act64 as _act64

if TYPE_CHECKING:  # the config is the depth study's; it imports this module, not the reverse
    from bncli.studies.depth import DepthConfig


def _relu_like(kind: str, slope: float):
    """Closed forms for positively homogeneous activations: E = c1 sqrt(var), E^2 = c2 var."""
    if kind == "relu":
        return 1 / math.sqrt(2 * math.pi), 0.5
    if kind == "leaky_relu":
        return (1 - slope) / math.sqrt(2 * math.pi), (1 + slope * slope) / 2
    if kind == "linear":
        return 0.0, 1.0
    return None


@cache
def sphere_nodes(d: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for one coordinate of scale * (a uniform unit vector in R^d).

    That coordinate is scale * t with density proportional to (1 - t^2)^((d - 3) / 2); with
    t = cos(theta) the weight is sin(theta)^(d - 2). Large d tends to N(0, scale^2 / d).
    """
    if d == 1:
        return np.array([-scale, scale]), np.array([0.5, 0.5])
    if d > 4000:
        u = np.linspace(-10.0, 10.0, _GRID)
        w = np.exp(-0.5 * u * u)
        return u * scale / math.sqrt(d), w / w.sum()
    theta = (np.arange(20000) + 0.5) * (math.pi / 20000)
    logw = (d - 2) * np.log(np.sin(theta))
    w = np.exp(logw - logw.max())
    return scale * np.cos(theta), w / w.sum()


def sphere_moments(act, m: int, centred: bool) -> tuple[float, float]:
    """(E, E^2) of act(y) for one entry y of a vector normalised over m values.

    Centred (batch/layer/group norm): the m values are an isotropic Gaussian projected on the
    (m - 1)-dim space orthogonal to 1 and scaled to mean square 1, so y = sqrt(m - 1) t with
    t a coordinate of a uniform unit vector in m - 1 dimensions. Uncentred (rmsnorm): m
    dimensions, y = sqrt(m) t. eps is ignored (it matters only when the variance is ~1e-5).
    """
    d = m - 1 if centred else m
    y, w = sphere_nodes(d, math.sqrt(d))
    a = _act64(act, y)
    return float((w * a).sum()), float((w * a * a).sum())


def weight_var(cfg: DepthConfig, n: int | None = None) -> float:
    """The variance sigma_w^2 of one weight entry under cfg's init, for fan-in n (default: the
    MLP's width)."""
    n = n or cfg.width
    init = cfg.init.value
    if init in ("kaiming", "kaiming_uniform"):
        return kaiming_gain(cfg) * kaiming_gain(cfg) / n  # products, not **: 1e200 ** 2 raises, 1e200 * 1e200 is inf
    if init in ("xavier", "xavier_uniform", "lecun_normal", "orthogonal"):
        return cfg.init_gain * cfg.init_gain / n
    if init == "normal":
        return cfg.init_std * cfg.init_std
    if init == "trunc_normal":  # N(0, s^2) cut at +-2s keeps variance s^2 (1 - 2a phi(a) / (2 Phi(a) - 1))
        a = 2.0
        phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        return cfg.init_std * cfg.init_std * (1 - 2 * a * phi / math.erf(a / math.sqrt(2)))
    if init == "default":  # U(-1/sqrt(n), 1/sqrt(n))
        return 1 / (3 * n)
    raise ValueError(f"no weight variance for init {init}")


def norm_group(cfg: DepthConfig) -> tuple[int, bool] | None:
    """(m, centred): how many values each norm normalises over; None for no (or eval) norm."""
    norm = cfg.norm.value
    if norm == "batchnorm":
        return (cfg.batch_size, True) if cfg.bn_mode.value == "train" else None
    return {
        "layernorm": (cfg.width, True),
        "groupnorm": (cfg.width // cfg.groups, True),
        "rmsnorm": (cfg.width, False),
        "none": None,
    }[norm]


def theory_std(cfg: DepthConfig) -> np.ndarray:
    """Predicted std of each layer's output, layers 0 .. depth-1 (inf once it overflows)."""
    if cfg.arch.value != "mlp":
        return map_theory(cfg)
    act = activation(cfg)
    closed = _relu_like(cfg.activation.value, cfg.negative_slope)
    n, s2w, alpha = cfg.width, weight_var(cfg), cfg.residual
    group = norm_group(cfg)
    bn_eval = cfg.norm.value == "batchnorm" and cfg.bn_mode.value == "eval"
    shrink = 1 / (1 + EPS) if bn_eval else 1.0  # eval BN at init divides by sqrt(1 + eps)
    post_norm = cfg.order.value == "linear-norm-act"

    def gauss(var):
        if closed is not None:
            return closed[0] * math.sqrt(var), closed[1] * var
        return gauss_moments(act, var)

    fixed = sphere_moments(act, *group) if group is not None and post_norm else None
    m, q = 0.0, 1.0  # the N(0, 1) input
    out = np.empty(cfg.depth)
    for i in range(cfg.depth):
        v = n * s2w * q  # variance of z = W x
        if not math.isfinite(v):
            out[i:] = math.inf
            break
        if post_norm:  # f = act(norm(z))
            mu, s = fixed if fixed is not None else gauss(v * shrink)
        else:  # f = norm(act(z))
            mu, s = gauss(v)
            if group is not None and group[1]:
                mu, s = 0.0, 1.0  # centred and scaled to unit variance over the group
            elif group is not None:  # rmsnorm: unit mean square, mean E act / rms act
                mu, s = (mu / math.sqrt(s) if s > 0 else 0.0), 1.0
            else:
                mu, s = mu * math.sqrt(shrink), s * shrink
        if alpha:
            m, q = m + alpha * mu, q + 2 * alpha * m * mu + alpha * alpha * s
        else:
            m, q = mu, s
        out[i] = math.sqrt(max(q - m * m, 0.0))
    return out


def bn_relu_grad_rate(batch_size: int, samples: int | None = None, seed: int = 0) -> float:
    """Mean-field growth factor of the gradient norm per layer, going backwards, in a
    Linear -> BatchNorm (train) -> ReLU stack at batch size B >= 4 (docs/theory.md).

    lambda(B) = (B - 1) / ((B - 3) a) * (1/2 - E[k (B - k)] / (B^2 (B - 1))) - 1 / (B - 3),
    on the squared norm, with u uniform on the unit sphere orthogonal to 1 in R^B, k the
    number of positive entries of u, and a = E[|u+|^2 - (1'u+)^2 / B]. The expectations are
    Monte Carlo over `samples` draws of u; B -> inf gives pi / (pi - 1), Yang et al.'s limit.
    Returns sqrt(lambda), the factor on the norm (and on grad_std).
    """
    b = batch_size
    if b < 4:
        raise ValueError("the mean-field gradient rate needs batch_size >= 4")
    if b > 2048:
        return math.sqrt(math.pi / (math.pi - 1))
    samples = samples or max(2_000, 1_000_000 // b)  # relative MC error ~ 1/sqrt(samples * B)
    g = torch.Generator().manual_seed(seed)
    a_sum = k_sum = 0.0
    chunk = max(1, min(samples, 2_000_000 // b))
    done = 0
    while done < samples:
        z = torch.randn(min(chunk, samples - done), b, generator=g, dtype=torch.float64)
        z -= z.mean(1, keepdim=True)
        u = z / z.norm(dim=1, keepdim=True)
        up = u.clamp_min(0)
        k = (u > 0).sum(1).double()
        a_sum += float((up.square().sum(1) - up.sum(1).square() / b).sum())
        k_sum += float((k * (b - k)).sum())
        done += len(z)
    a, kk = a_sum / samples, k_sum / samples
    lam = (b - 1) / ((b - 3) * a) * (0.5 - kk / (b * b * (b - 1))) - 1 / (b - 3)
    return math.sqrt(lam)


# -- feature maps: conv and resnet -------------------------------------------------------------


def _box(m: np.ndarray, k: int, stride: int = 1) -> np.ndarray:
    """The mean over each k x k window (zero padding k // 2) of a per-pixel map, at `stride`.

    With independent zero-mean weights a conv output's second moment at pixel p is
    sigma_w^2 C sum over the window of E[input^2], i.e. (fan_in sigma_w^2) times this mean:
    pixels near the border see fewer inputs (the padding is zeros).
    """
    h, pad = m.shape[0], k // 2
    padded = np.pad(m, pad)
    out = sum(padded[i : i + h, j : j + h] for i in range(k) for j in range(k)) / (k * k)
    return out[::stride, ::stride]


def map_theory(cfg: DepthConfig) -> np.ndarray:
    """Predicted std of each conv layer's or ResNet block's output (docs/theory.md).

    Mean field on per-pixel second-moment maps: a conv multiplies the window mean of its input's
    map by fan_in sigma_w^2 (_box), a normalisation divides a map by its spatial mean (it
    rescales each channel, over pixels, to unit variance), and a relu-like activation scales it
    by E[act(z)^2] / E[z^2] (z symmetric). A residual block adds its branch's map, times
    alpha^2, to the skip path's. For relu-like activations only (relu, leaky_relu, linear);
    others, an eval-mode BatchNorm after a ResNet's stem and a conv stack with a residual or
    linear-act-norm order give nan.
    """
    closed = _relu_like(cfg.activation.value, cfg.negative_slope)
    out = np.full(cfg.depth, np.nan)
    if closed is None or (cfg.arch.value == "conv" and (cfg.residual or cfg.order.value != "linear-norm-act")):
        return out
    c1, c2 = closed
    centred = cfg.norm.value != "none" and not (cfg.norm.value == "batchnorm" and cfg.bn_mode.value == "eval")
    shrink = 1 / (1 + EPS) if cfg.norm.value == "batchnorm" and cfg.bn_mode.value == "eval" else 1.0

    def norm(m):
        return m / m.mean() if centred else m * shrink

    def conv(m, c_in, k=cfg.kernel_size, stride=1):
        n = c_in * k * k
        return n * weight_var(cfg, n) * _box(m, k, stride)

    m = np.ones((cfg.image_size, cfg.image_size))  # the N(0, 1) input
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(cfg.depth):
            if cfg.arch.value == "conv":
                z = norm(conv(m, cfg.channels))
                m = c2 * z
                out[i] = math.sqrt(max(m.mean() - (c1 * np.sqrt(z).mean()) ** 2, 0.0))
                continue
            s, c, _ = stage_of(cfg, i)
            transition = s > 0 and i % cfg.blocks == 0
            c_in = c // 2 if transition else c
            h = c2 * norm(m)
            f = conv(c2 * norm(conv(h, c_in, stride=2 if transition else 1)), c)
            skip = conv(h, c_in, k=1, stride=2) if transition else m
            m = skip + cfg.residual * cfg.residual * f
            out[i] = math.sqrt(m.mean()) if np.isfinite(m.mean()) else math.inf
    return out
