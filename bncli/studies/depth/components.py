"""The depth study's inits, norms and activations: one record each, holding everything about it.

    NORMS["layernorm"].build(net, device, dtype)(x)   # the norm, at init (weight 1, bias 0)
    INITS["kaiming"].variance(net, fan_in)            # what the theory column assumes of it

A record has its help text (what --help and docs/configs.md say), its forward function, its
theory (an init's weight variance; a norm's normalisation group; an activation's Gaussian
moments and He gain) and its checks against the rest of the network. A new one is one record
in its registry; a record without theory is refused when the registry is built.

Weights are plain tensors, not nn.Linear or nn.Conv2d modules: building a module runs PyTorch's
default init, which a study would then throw away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Generic, TypeVar

from bncli.runtime import torch_threads
from bncli.studies.depth import theory

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F

    from bncli.studies.depth.net import Net
else:
    from bncli.lazy import lazy

    torch, F = lazy("torch"), lazy("torch.nn.functional")

EPS = 1e-5  # every norm's eps but rmsnorm's, which is torch's default: finfo(dtype).eps
Fn = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Init:
    """A weight init scheme. `fill(w, g, net)` fills a (fan_out, ...) weight in place from
    generator g; `variance(net, n)` is one entry's variance sigma_w^2 (docs/theory.md), with
    n = `fan(fan_in, fan_out)`: fan_in for most, the mean of the two for xavier's, the larger for
    orthogonal's (a tall matrix has orthonormal columns). They differ only where a weight is not
    square (a transformer's MLP)."""

    name: str
    help: str
    fill: Callable[[torch.Tensor, torch.Generator, Net], torch.Tensor]
    variance: Callable[[Net, float], float]
    fan: Callable[[int, int], float] = lambda fan_in, fan_out: fan_in

    def weight_variance(self, net: Net, fan_in: int, fan_out: int) -> float:
        """sigma_w^2 of one entry of a (fan_out, fan_in) weight."""
        return self.variance(net, self.fan(fan_in, fan_out))


@dataclass(frozen=True)
class Norm:
    """A normalisation at init (affine weight 1, bias 0). `build(net, device, dtype)` gives the
    function x -> norm(x). Its theory: `group(net, features, pixels)` is (m, centred), the number
    of values each output is normalised over and whether their mean is taken out, or None for a
    norm that does not normalise at init (none, eval-mode BatchNorm); `scale(net)` multiplies
    the variance where it does not; `across_samples(net)` says whether its statistics mix the
    samples (train-mode BatchNorm), which a theory of one sample at a time (a transformer's
    tokens) cannot follow; `centres_channels(net)` whether it takes out each channel's own mean
    (train-mode BatchNorm, InstanceNorm, GroupNorm of one channel a group): only then do the
    channels' means not build up with depth (Brock et al.'s mean shift), and a conv stack's
    per-channel theory (theory_chan_sq_mean, theory_chan_var) holds. `check(net, features,
    field, pixels)` returns what is wrong with using it in `net`, or None. Both are given the
    channels of `net`'s layers, the field that sets them (width, channels) and the values per
    channel of one sample (pixels).

    The input is (samples, channels) or (samples, channels, pixels...): axis 1 is the channel
    axis, as torch's norms take it. A transformer hands its norm the (batch x tokens, width)
    matrix of its tokens, so each token is a sample and its features the channels."""

    name: str
    help: str
    build: Callable[[Net, torch.device, torch.dtype], Fn]
    group: Callable[[Net, int, int], tuple[int, bool] | None]
    scale: Callable[[Net], float] = lambda net: 1.0
    check: Callable[[Net, int, str, int], str | None] = lambda net, features, field, pixels: None
    across_samples: Callable[[Net], bool] = lambda net: False
    centres_channels: Callable[[Net], bool] = lambda net: False


@dataclass(frozen=True)
class Activation:
    """An activation. `build(net)` gives the function. Its theory: `homogeneous(net)` is (c1, c2)
    with E act(z) = c1 sqrt(v) and E act(z)^2 = c2 v for z ~ N(0, v), or None (then the
    moments come from quadrature of the function); `gain(net)` is He et al.'s gain, the
    kaiming init's."""

    name: str
    help: str
    build: Callable[[Net], Fn]
    homogeneous: Callable[[Net], tuple[float, float] | None]
    gain: Callable[[Net], float]

    def moments(self, net: Net, var: float) -> tuple[float, float]:
        """(E act(z), E act(z)^2) for z ~ N(0, var)."""
        closed = self.homogeneous(net)
        if closed is not None:
            return closed[0] * math.sqrt(var), closed[1] * var
        return theory.gauss_moments(self.build(net), var)

    def gamma(self, net: Net) -> float:
        """Brock et al.'s gamma: 1 / std of act(z), z ~ N(0, 1), so that gamma act(z) has unit
        variance (sqrt(2 / (1 - 1/pi)) = 1.7139 for relu)."""
        mu, s = self.moments(net, 1.0)
        return 1 / math.sqrt(s - mu * mu)


R = TypeVar("R", Init, Norm, Activation)


class Registry(Mapping[str, R], Generic[R]):
    """Records by name, in order: the choices of their config field. A record missing a part (its
    theory), or a name given twice, is refused when it is registered (at import for bncli's
    own), not when a run first needs it."""

    def __init__(self, *records: R) -> None:
        self._records: dict[str, R] = {}
        for r in records:
            self.register(r)

    def register(self, r: R) -> R:
        """Add a record (a researcher's own norm, say, from their code or a test); returns it."""
        parts = {f.name: getattr(r, f.name) for f in fields(r)}
        missing = [k for k, v in parts.items() if not isinstance(v, (str, int, float)) and not callable(v)]
        if missing or not r.name.isidentifier() or not r.help:
            raise TypeError(f"{type(r).__name__} {r.name!r}: needs a name, help and {', '.join(missing)}")
        if r.name in self._records:
            raise TypeError(f"{type(r).__name__} {r.name!r} is registered twice")
        self._records[r.name] = r
        return r

    def unregister(self, name: str) -> None:
        del self._records[name]

    def __getitem__(self, name: str) -> R:
        return self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


# -- inits ----------------------------------------------------------------------------------------


def fan_in(w: torch.Tensor) -> int:
    """Inputs per output: in_features for a Linear weight, C_in x k x k for a Conv2d one (as
    torch's init functions count it)."""
    return w[0].numel()


def _kaiming(uniform: bool) -> Callable[[torch.Tensor, torch.Generator, Net], torch.Tensor]:
    def fill(w: torch.Tensor, g: torch.Generator, net: Net) -> torch.Tensor:
        # torch's kaiming_*_ computes exactly this std; here with the activation's own gain
        std = net.activation.gain(net) / math.sqrt(fan_in(w))
        if uniform:
            return torch.nn.init.uniform_(w, -math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator=g)
        return torch.nn.init.normal_(w, 0.0, std, generator=g)

    return fill


def _orthogonal(w: torch.Tensor, g: torch.Generator, net: Net) -> torch.Tensor:
    # LAPACK's QR splits its work across threads and its last bits follow the thread count:
    # one thread, so an orthogonal weight is the same on every machine
    with torch_threads(1 if w.device.type == "cpu" else torch.get_num_threads()):
        return torch.nn.init.orthogonal_(w, gain=net.init_gain, generator=g)


def _trunc_variance(net: Net, n: float) -> float:
    # N(0, s^2) cut at +-2s keeps variance s^2 (1 - 2a phi(a) / (2 Phi(a) - 1)), a = 2
    a = 2.0
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return net.init_std * net.init_std * (1 - 2 * a * phi / math.erf(a / math.sqrt(2)))


def _mean_fan(fan_in: int, fan_out: int) -> float:  # xavier: gain^2 * 2 / (fan_in + fan_out)
    return (fan_in + fan_out) / 2


def _gain_variance(net: Net, n: float) -> float:
    return net.init_gain * net.init_gain / n


def _he_variance(net: Net, n: float) -> float:
    gain = net.activation.gain(net)
    return gain * gain / n  # products, not **: 1e200 ** 2 raises, 1e200 * 1e200 is inf


INITS: Registry[Init] = Registry(
    Init(
        "kaiming",
        "kaiming_normal_, fan_in, the activation's gain (relu's for relu, tanh and linear)",
        _kaiming(uniform=False),
        _he_variance,
    ),
    Init("kaiming_uniform", "kaiming_uniform_, fan_in, the activation's gain", _kaiming(uniform=True), _he_variance),
    Init(
        "xavier",
        "xavier_normal_ with gain init_gain",
        lambda w, g, net: torch.nn.init.xavier_normal_(w, gain=net.init_gain, generator=g),
        _gain_variance,
        fan=_mean_fan,
    ),
    Init(
        "xavier_uniform",
        "xavier_uniform_ with gain init_gain",
        lambda w, g, net: torch.nn.init.xavier_uniform_(w, gain=net.init_gain, generator=g),
        _gain_variance,
        fan=_mean_fan,
    ),
    Init(
        "normal",
        "N(0, init_std^2), the notebook's alternative",
        lambda w, g, net: torch.nn.init.normal_(w, 0.0, net.init_std, generator=g),
        lambda net, n: net.init_std * net.init_std,
    ),
    # cut at +-2 std, the usual choice (timm, ViT); the std of what is kept is 0.88 init_std
    Init(
        "trunc_normal",
        "N(0, init_std^2) cut at +-2 init_std",
        lambda w, g, net: torch.nn.init.trunc_normal_(
            w, 0.0, net.init_std, -2 * net.init_std, 2 * net.init_std, generator=g
        ),
        _trunc_variance,
    ),
    Init(
        "lecun_normal",
        "N(0, init_gain^2 / fan_in) (LeCun et al. 1998)",
        lambda w, g, net: torch.nn.init.normal_(w, 0.0, net.init_gain / math.sqrt(fan_in(w)), generator=g),
        _gain_variance,
    ),
    Init("orthogonal", "orthogonal_ with gain init_gain", _orthogonal, _gain_variance, fan=max),
    # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    Init(
        "default",
        "what nn.Linear does on its own: U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
        lambda w, g, net: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g),
        lambda net, n: 1 / (3 * n),
    ),
)


# -- norms ----------------------------------------------------------------------------------------


def _bn_train(x: torch.Tensor) -> torch.Tensor:
    """Train-mode BatchNorm1d/2d at init: batch statistics per channel over the batch (and the
    pixels), biased variance.

    Written out rather than F.batch_norm: torch's CPU kernel splits its sums across threads,
    so its last bits follow torch.get_num_threads(), while these per-channel reductions do
    not. The same config gives the same bytes on any machine, sequentially, in a --workers
    pool or in a Ray task.
    """
    xf = x.float() if x.dtype == torch.bfloat16 else x  # bfloat16 sums lose too much
    dims = (0,) if x.dim() == 2 else (0, *range(2, x.dim()))
    xc = xf - xf.mean(dims, keepdim=x.dim() > 2)
    return (xc * torch.rsqrt(xc.square().mean(dims, keepdim=x.dim() > 2) + EPS)).to(x.dtype)


def _bn_eval(device: torch.device, dtype: torch.dtype) -> Fn:
    # a freshly built BatchNorm in eval mode: running_mean 0, running_var 1 (one pair per
    # channel count: a ResNet's stages differ)
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def norm(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c not in stats:
            stats[c] = (torch.zeros(c, device=device, dtype=dtype), torch.ones(c, device=device, dtype=dtype))
        return F.batch_norm(x, *stats[c], training=False, eps=EPS)

    return norm


def _batchnorm(net: Net, device: torch.device, dtype: torch.dtype) -> Fn:
    if net.bn_mode == "eval":
        return _bn_eval(device, dtype)
    if device.type == "cuda":  # one fused kernel, not five; on one GPU its bits are fixed too
        return lambda x: F.batch_norm(x, None, None, training=True, eps=EPS)
    return _bn_train


def _bn_check(net: Net, features: int, field: str, pixels: int) -> str | None:
    if net.bn_mode == "train" and net.batch_size < 2:
        return "batch_size must be at least 2 with norm batchnorm (BatchNorm cannot normalise a single sample)"
    return None


def _groups_check(net: Net, features: int, field: str, pixels: int) -> str | None:
    if features % net.groups:
        return (
            f"groups must divide {field} for norm groupnorm: {field} {features} is not a multiple of groups "
            f"{net.groups}"
        )
    if features // net.groups * pixels < 2:
        return (
            f"groups: each of the {net.groups} groups must hold at least 2 values to normalise "
            f"({field} {features} / groups {net.groups} x {pixels} pixel(s))"
        )
    return None


def _instance_check(net: Net, features: int, field: str, pixels: int) -> str | None:
    if pixels < 2:
        return f"norm instancenorm normalises each channel over its pixels: it needs feature maps, not arch {net.arch}"
    return None


NORMS: Registry[Norm] = Registry(
    Norm(
        "batchnorm",
        "each channel over the batch (and H, W), with batch statistics unless bn_mode is eval",
        _batchnorm,
        lambda net, c, px: (net.batch_size * px, True) if net.bn_mode == "train" else None,
        scale=lambda net: 1 / (1 + EPS) if net.bn_mode == "eval" else 1.0,
        check=_bn_check,
        across_samples=lambda net: net.bn_mode == "train",
        centres_channels=lambda net: net.bn_mode == "train",
    ),
    # over every feature of a sample: the MLP's width, or a feature map's C, H and W
    Norm(
        "layernorm",
        "each sample over all its features (C, H, W on feature maps)",
        lambda net, d, t: lambda x: F.layer_norm(x, x.shape[1:], eps=EPS),
        lambda net, c, px: (c * px, True),
    ),
    Norm(
        "groupnorm",
        "each sample over groups of `groups` channels' features",
        lambda net, d, t: lambda x: F.group_norm(x, net.groups, eps=EPS),
        lambda net, c, px: (c // net.groups * px, True),
        check=_groups_check,
        centres_channels=lambda net: net.groups == net.channels,
    ),
    Norm(
        "rmsnorm",
        "each sample to unit mean square over all its features (no centring; eps: finfo(dtype).eps)",
        lambda net, d, t: lambda x: F.rms_norm(x, x.shape[1:]),
        lambda net, c, px: (c * px, False),
    ),
    Norm(
        "instancenorm",
        "each sample's channels, one at a time, over their pixels (feature maps only)",
        lambda net, d, t: lambda x: F.instance_norm(x, eps=EPS),
        lambda net, c, px: (px, True),
        check=_instance_check,
        centres_channels=lambda net: True,
    ),
    Norm("none", "no normalization", lambda net, d, t: lambda x: x, lambda net, c, px: None),
)


# -- activations ----------------------------------------------------------------------------------

_RELU_GAIN = math.sqrt(2.0)  # relu's, which the notebook's kaiming_normal_ uses for every activation


def _gauss_gain(act: Callable[[Net], Fn]) -> Callable[[Net], float]:
    # 1 / sqrt(E[act(Z)^2]), Z ~ N(0, 1): the rule behind relu's sqrt(2), for functions torch has no gain for
    return lambda net: 1 / math.sqrt(theory.gauss_moments(act(net), 1.0)[1])


def _leaky(net: Net) -> Fn:
    return lambda x: F.leaky_relu(x, net.negative_slope)


def _leaky_moments(net: Net) -> tuple[float, float]:
    s = net.negative_slope
    return (1 - s) / math.sqrt(2 * math.pi), (1 + s * s) / 2


def _leaky_gain(net: Net) -> float:  # torch's calculate_gain, as a product: 1e200 ** 2 would raise
    return math.sqrt(2.0 / (1 + net.negative_slope * net.negative_slope))


ACTIVATIONS: Registry[Activation] = Registry(
    Activation(
        "relu",
        "max(x, 0)",
        lambda net: torch.relu,
        lambda net: (1 / math.sqrt(2 * math.pi), 0.5),
        lambda net: _RELU_GAIN,
    ),
    Activation(
        "tanh",
        "tanh (with relu's kaiming gain, as the notebook)",
        lambda net: torch.tanh,
        lambda net: None,
        lambda net: _RELU_GAIN,
    ),
    Activation(
        "linear",
        "the identity (with relu's kaiming gain)",
        lambda net: lambda x: x,
        lambda net: (0.0, 1.0),
        lambda net: _RELU_GAIN,
    ),
    Activation("gelu", "exact (erf) GELU", lambda net: F.gelu, lambda net: None, _gauss_gain(lambda net: F.gelu)),
    Activation("silu", "x sigmoid(x)", lambda net: F.silu, lambda net: None, _gauss_gain(lambda net: F.silu)),
    Activation("leaky_relu", "slope negative_slope below zero", _leaky, _leaky_moments, _leaky_gain),
    # Ioffe and Szegedy's Figure 1 network (bncli train, configs/sweeps/bn_paper.yaml)
    Activation(
        "sigmoid",
        "1 / (1 + exp(-x))",
        lambda net: torch.sigmoid,
        lambda net: None,
        _gauss_gain(lambda net: torch.sigmoid),
    ),
)
