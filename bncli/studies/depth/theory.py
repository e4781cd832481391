"""Mean-field predictions for the depth study: the pieces every architecture's theory column uses.

    bncli depth-study --norm none --init kaiming --activation tanh   # theory_std column

The derivation is in docs/theory.md. Each layer's output is tracked through its mean and second
moment per entry (the MLP, bncli/studies/depth/mlp.py) or through per-pixel second-moment maps
(conv and resnet). An activation's moments come from a Gaussian integral (no norm before it)
or from the exact distribution of one normalised coordinate, a scaled Beta, when a norm over
m values precedes it. Integrals are plain quadrature in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    from bncli.studies.depth.net import Net
else:
    from bncli.lazy import lazy

    np, torch = lazy("numpy"), lazy("torch")

GAUSS_GRID = 8001  # nodes on [-10, 10] standard deviations: ~1e-6 even for relu's kink


def act64(act: Callable[[torch.Tensor], torch.Tensor], z: np.ndarray) -> np.ndarray:
    """An activation on float64 values."""
    return act(torch.from_numpy(z)).numpy()


def gauss_moments(act: Callable[[torch.Tensor], torch.Tensor], var: float) -> tuple[float, float]:
    """(E[act(z)], E[act(z)^2]) for z ~ N(0, var), by the trapezoid rule."""
    if var <= 0:
        a0 = float(act64(act, np.zeros(1))[0])
        return a0, a0 * a0
    u = np.linspace(-10.0, 10.0, GAUSS_GRID)
    w = np.exp(-0.5 * u * u)
    w /= w.sum()
    a = act64(act, u * math.sqrt(var))
    return float((w * a).sum()), float((w * a * a).sum())


@cache
def sphere_nodes(d: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for one coordinate of scale * (a uniform unit vector in R^d).

    That coordinate is scale * t with density proportional to (1 - t^2)^((d - 3) / 2); with
    t = cos(theta) the weight is sin(theta)^(d - 2). Large d tends to N(0, scale^2 / d).
    """
    if d == 1:
        return np.array([-scale, scale]), np.array([0.5, 0.5])
    if d > 4000:
        u = np.linspace(-10.0, 10.0, GAUSS_GRID)
        w = np.exp(-0.5 * u * u)
        return u * scale / math.sqrt(d), w / w.sum()
    theta = (np.arange(20000) + 0.5) * (math.pi / 20000)
    logw = (d - 2) * np.log(np.sin(theta))
    w = np.exp(logw - logw.max())
    return scale * np.cos(theta), w / w.sum()


def sphere_moments(act: Callable[[torch.Tensor], torch.Tensor], m: int, centred: bool) -> tuple[float, float]:
    """(E, E^2) of act(y) for one entry y of a vector normalised over m values.

    Centred (batch/layer/group norm): the m values are an isotropic Gaussian projected on the
    (m - 1)-dim space orthogonal to 1 and scaled to mean square 1, so y = sqrt(m - 1) t with
    t a coordinate of a uniform unit vector in m - 1 dimensions. Uncentred (rmsnorm): m
    dimensions, y = sqrt(m) t. eps is ignored (it matters only when the variance is ~1e-5).
    """
    d = m - 1 if centred else m
    y, w = sphere_nodes(d, math.sqrt(d))
    a = act64(act, y)
    return float((w * a).sum()), float((w * a * a).sum())


def grad_rate(net: Net) -> float | None:
    """Yang et al.'s gradient growth per layer, going backwards, where the stack is the one it is
    derived for (Linear -> BatchNorm (train) -> ReLU, no residual, batch_size >= 4); else None."""
    bn_relu = (
        net.arch in ("mlp", "conv")
        and net.norm.name == "batchnorm"
        and net.bn_mode == "train"
        and net.activation.name == "relu"
        and net.order == "linear-norm-act"
        and not net.skip
        and net.batch_size >= 4
    )
    return round(bn_relu_grad_rate(net.batch_size), 4) if bn_relu else None


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


# -- tokens: the transformer ----------------------------------------------------------------------

ATTENTION_DRAWS = 2**22  # Monte Carlo of attention_kernel: about this many multiply-adds a block


@lru_cache(maxsize=2**14)  # a sweep's seeds ask the same again
def attention_kernel(v: float, rho: float, tokens: int, head_dim: int) -> tuple[float, float]:
    """(E |o_t|^2, E <o_t, o_u>) for o_t = sum_s P_ts y_s, t != u, where the tokens y_s have
    mean square 1 and cosine rho with each other, and P is the softmax over s of the logits
    sqrt(v) q_t . k_s / sqrt(head_dim) of Gaussian queries and keys with the tokens' correlation
    (what Q and K drawn at init make of such tokens, v the logits' variance).

    With Gram matrix rho 1 1^T + (1 - rho) I, E|o_t|^2 = rho + (1 - rho) E sum_s P_ts^2 and
    E<o_t, o_u> = rho + (1 - rho) E sum_s P_ts P_us: between 1/tokens (uniform attention over
    orthogonal tokens) and 1 (collapsed tokens, or one token: then exactly 1, 1). The two
    expectations are a Monte Carlo over seeded draws of q and k (the same draws for every
    argument, so the result is a smooth, deterministic function of v and rho).
    """
    if tokens == 1:
        return 1.0, 1.0
    rho = min(max(rho, 0.0), 1.0)
    draws = max(4, min(256, ATTENTION_DRAWS // (tokens * tokens * head_dim)))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, draws, tokens + 1, head_dim, generator=g, dtype=torch.float64)
    qk = math.sqrt(rho) * z[:, :, :1] + math.sqrt(1 - rho) * z[:, :, 1:]  # a shared part and each token's own
    logits = (qk[0] @ qk[1].transpose(1, 2)) * math.sqrt(v / head_dim)
    p = torch.softmax(logits, -1)
    pp = p @ p.transpose(1, 2)  # sum_s P_ts P_us
    own = float(pp.diagonal(dim1=1, dim2=2).mean())
    other = float((pp.sum((1, 2)) - pp.diagonal(dim1=1, dim2=2).sum(1)).mean()) / (tokens * (tokens - 1))
    return rho + (1 - rho) * own, rho + (1 - rho) * other


KERNEL_GRID = 401  # trapezoid nodes per axis on [-10, 10] of act_correlation's quadrature


def act_correlation(
    act: Callable[[torch.Tensor], torch.Tensor], homogeneous: tuple[float, float] | None, var: float, rho: float
) -> float:
    """E act(u) act(w) / E act(u)^2 for (u, w) Gaussian, mean 0, variance var, correlation rho.

    A positively homogeneous activation (relu, leaky_relu, linear: `homogeneous` = (c1, c2), see
    Activation) is (p + n)/2 x + (p - n)/2 |x|, and E|u||w| = (2/pi) (sqrt(1 - rho^2) + rho
    asin rho) (Cho and Saul's arc-cosine kernel) gives it in closed form; the others take the
    trapezoid rule on a 401 x 401 grid over +-10 standard deviations (spectrally accurate for
    smooth functions: ~1e-12 for tanh at variance 4); for the first the ratio does not depend
    on the variance.
    """
    rho = min(max(rho, -1.0), 1.0)
    if homogeneous is not None:
        c1, c2 = homogeneous
        odd = c2 - math.pi * c1 * c1 / 2  # ((p + n) / 2)^2
        return (odd * rho + c1 * c1 * (math.sqrt(1 - rho * rho) + rho * math.asin(rho))) / c2
    x = np.linspace(-10.0, 10.0, KERNEL_GRID)
    w = np.exp(-0.5 * x * x)
    w /= w.sum()
    sd = math.sqrt(var)
    au = act64(act, sd * x)[:, None]
    av = act64(act, sd * (rho * x[:, None] + math.sqrt(1 - rho * rho) * x[None, :]))
    ww = w[:, None] * w[None, :]
    own = (ww * au * au).sum()
    return float((ww * au * av).sum() / own) if own > 0 else 1.0


# -- feature maps: conv and resnet -------------------------------------------------------------


def box(m: np.ndarray, k: int, stride: int = 1, circular: bool = False) -> np.ndarray:
    """The mean over each k x k window (padding k // 2: zeros, or `circular`) of a per-pixel
    map, at `stride`.

    With independent zero-mean weights a conv output's second moment at pixel p is
    sigma_w^2 C sum over the window of E[input^2], i.e. (fan_in sigma_w^2) times this mean:
    with zero padding pixels near the border see fewer inputs; circular padding wraps the map
    around, so a uniform map stays uniform.
    """
    h, pad = m.shape[0], k // 2
    padded = np.pad(m, pad, mode="wrap" if circular else "constant")
    total = sum(padded[i : i + h, j : j + h] for i in range(k) for j in range(k))
    assert isinstance(total, np.ndarray)  # k >= 1: a sum of arrays, never the 0 of an empty sum
    out = total / (k * k)
    return out[::stride, ::stride]


class Maps:
    """Mean field on per-pixel second-moment maps (docs/theory.md): a conv multiplies the window
    mean of its input's map by fan_in sigma_w^2 (box), a norm that normalises divides a map by
    its spatial mean (it rescales each channel, over pixels, to unit variance), and a relu-like
    activation scales it by c2 = E[act(z)^2] / E[z^2] (z symmetric). None when the activation
    is not positively homogeneous: the maps then need more than second moments."""

    def __init__(self, net: Net) -> None:
        self.net = net
        closed = net.activation.homogeneous(net)
        self.c1, self.c2 = closed if closed is not None else (math.nan, math.nan)
        self.ok = closed is not None
        self.normalises = net.norm.group(net, net.channels, net.image_size**2) is not None
        self.shrink = net.norm.scale(net)
        self.gamma = net.activation.gamma(net) if self.ok else math.nan
        self.circular = net.padding == "circular"

    def norm(self, m: np.ndarray) -> np.ndarray:
        return m / m.mean() if self.normalises else m * self.shrink

    def conv(self, m: np.ndarray, c_in: int, k: int | None = None, stride: int = 1) -> np.ndarray:
        k = self.net.kernel_size if k is None else k
        n = c_in * k * k
        return n * self.net.init.variance(self.net, n) * box(m, k, stride, self.circular and k > 1)

    def conv_ws(self, s: np.ndarray, mu: np.ndarray, c_in: int, k: int | None = None, stride: int = 1) -> np.ndarray:
        """The second-moment map of a Scaled-WS conv's output, from its input's second-moment
        map s and mean map mu (the same in every channel). Each output channel's n = C k^2
        weights sum to 0 and their squares to gamma^2, so over their (exchangeable) draw
        E[w_j w_j'] = gamma^2 (delta_jj' - 1/n) / (n - 1), and with independent inputs

            E out(p)^2 = gamma^2 / (n - 1) * (C S - ((C U)^2 + C V) / n),

        S, U and V the window sums of s, mu and s - mu^2 (padded as the net is): gamma^2 times the
        input's variance inside the image, where the channel mean is taken out exactly."""
        k = self.net.kernel_size if k is None else k
        n, g = c_in * k * k, self.gamma
        ssum, usum, vsum = (k * k * box(a, k, stride, self.circular and k > 1) for a in (s, mu, s - mu * mu))
        if n == 1:  # one weight, standardized to 0
            return np.zeros_like(ssum)
        return g * g / (n - 1) * (c_in * ssum - (c_in * c_in * usum * usum + c_in * vsum) / n)
