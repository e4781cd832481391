"""The layer stacks: init, norm and activation registries, per-layer seeding, devices.

Three architectures (cfg.arch): the notebook's MLP, Linear(bias=False) -> norm -> activation;
the same with Conv2d(C, C, k, padding k // 2, bias=False) on (batch, C, H, W) feature maps;
and a pre-activation (v2) ResNet whose "layers" are residual blocks.

Weights are plain tensors, not nn.Linear or nn.Conv2d modules: building a module runs
PyTorch's default init, which a study would then throw away. Each weight is drawn once, on the
target device, from a generator seeded by (seed, layer), so it can be made on demand in any
order and dropped after use: memory stays O(one layer's weights) however deep the stack.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from bncli.errors import BncliError

if TYPE_CHECKING:  # the config is the depth study's; it imports this module, not the reverse
    from bncli.studies.depth import DepthConfig

_MASK64 = (1 << 64) - 1
INPUT_STREAM, WEIGHT_STREAM = 1, 2
GRAD_STREAM = 4  # the depth study's backward cotangent (3 is running_stats' batches)


def stream_seed(seed: int, stream: int, index: int = 0) -> int:
    """A well-mixed 63-bit seed from (seed, stream, index) (splitmix64 finaliser)."""
    h = 0
    for part in (seed, stream, index):
        h = (h + (part & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


_GENERATORS = threading.local()  # per thread: one generator per device, reseeded for each use


def generator(device: torch.device, seed: int, stream: int, index: int = 0) -> torch.Generator:
    """A generator seeded for (seed, stream, index), to be used at once: this thread's own for
    `device`, reseeded. manual_seed resets a generator's whole state, so it draws exactly what
    a new one would, without building one per layer (a cost that shows on a GPU)."""
    cache = _GENERATORS.__dict__
    g = cache.get(str(device))
    if g is None:
        g = cache[str(device)] = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, stream, index))
    return g


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when available, else cpu. A CUDA device that is not there is a usage error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BncliError(
                f"--device {spec}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BncliError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return dev


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def _default_linear_(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)


def kaiming_gain(cfg: DepthConfig) -> float:
    """He et al.'s gain for the activation: 1 / sqrt(E[act(Z)^2]), Z ~ N(0, 1).

    relu, tanh and linear keep relu's sqrt(2), as the notebook does; leaky_relu's equals
    torch's calculate_gain; gelu and silu, which torch has no gain for, get the same rule
    by numerical integration.
    """
    act = cfg.activation.value
    if act == "leaky_relu":
        return math.sqrt(2.0 / (1 + cfg.negative_slope * cfg.negative_slope))  # 1e200 ** 2 would raise
    if act in ("gelu", "silu"):
        return 1 / math.sqrt(gauss_moments(activation(cfg), 1.0)[1])
    return math.sqrt(2.0)


GAUSS_GRID = 8001  # nodes on [-10, 10] standard deviations: ~1e-6 even for relu's kink


def act64(act, z: np.ndarray) -> np.ndarray:
    return act(torch.from_numpy(z)).numpy()


def gauss_moments(act, var: float) -> tuple[float, float]:
    """(E[act(z)], E[act(z)^2]) for z ~ N(0, var), by the trapezoid rule."""
    if var <= 0:
        a0 = float(act64(act, np.zeros(1))[0])
        return a0, a0 * a0
    u = np.linspace(-10.0, 10.0, GAUSS_GRID)
    w = np.exp(-0.5 * u * u)
    w /= w.sum()
    a = act64(act, u * math.sqrt(var))
    return float((w * a).sum()), float((w * a * a).sum())


def fan_in(w: torch.Tensor) -> int:
    """Inputs per output: in_features for a Linear weight, C_in x k x k for a Conv2d one (as
    torch's init functions count it)."""
    return w[0].numel()


def _kaiming_(w: torch.Tensor, g: torch.Generator, c: DepthConfig, uniform: bool) -> torch.Tensor:
    act = c.activation.value
    if act in ("relu", "tanh", "linear"):  # torch's own call: bitwise what bncli always drew
        init = torch.nn.init.kaiming_uniform_ if uniform else torch.nn.init.kaiming_normal_
        return init(w, mode="fan_in", nonlinearity="relu", generator=g)
    std = kaiming_gain(c) / math.sqrt(fan_in(w))
    if uniform:
        return torch.nn.init.uniform_(w, -math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator=g)
    return torch.nn.init.normal_(w, 0.0, std, generator=g)


# name -> fn(weight, generator, cfg) filling the weight in place
INITS: dict[str, Callable] = {
    "kaiming": lambda w, g, c: _kaiming_(w, g, c, uniform=False),
    "kaiming_uniform": lambda w, g, c: _kaiming_(w, g, c, uniform=True),
    "xavier": lambda w, g, c: torch.nn.init.xavier_normal_(w, gain=c.init_gain, generator=g),
    "xavier_uniform": lambda w, g, c: torch.nn.init.xavier_uniform_(w, gain=c.init_gain, generator=g),
    "normal": lambda w, g, c: torch.nn.init.normal_(w, 0.0, c.init_std, generator=g),
    # cut at +-2 std, the usual choice (timm, ViT); the std of what is kept is 0.88 init_std
    "trunc_normal": lambda w, g, c: torch.nn.init.trunc_normal_(
        w, 0.0, c.init_std, -2 * c.init_std, 2 * c.init_std, generator=g
    ),
    "lecun_normal": lambda w, g, c: torch.nn.init.normal_(w, 0.0, c.init_gain / math.sqrt(fan_in(w)), generator=g),
    "orthogonal": lambda w, g, c: _orthogonal_(w, g, c),
    "default": lambda w, g, c: _default_linear_(w, g),
}


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to n for the block, then put back."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def _orthogonal_(w: torch.Tensor, g: torch.Generator, cfg: DepthConfig) -> torch.Tensor:
    # LAPACK's QR splits its work across threads and its last bits follow the thread count:
    # one thread, so an orthogonal weight is the same on every machine
    with torch_threads(1 if w.device.type == "cpu" else torch.get_num_threads()):
        return torch.nn.init.orthogonal_(w, gain=cfg.init_gain, generator=g)


EPS = 1e-5  # every norm's eps but rmsnorm's, which is torch's default: finfo(dtype).eps


def _bn_eval(cfg: DepthConfig, device, dtype):
    # a freshly built BatchNorm1d/2d in eval mode: running_mean 0, running_var 1 (one pair per
    # channel count: a ResNet's stages differ)
    stats = {}

    def norm(x):
        c = x.shape[1]
        if c not in stats:
            stats[c] = (torch.zeros(c, device=device, dtype=dtype), torch.ones(c, device=device, dtype=dtype))
        return F.batch_norm(x, *stats[c], training=False, eps=EPS)

    return norm


def _bn_train(x: torch.Tensor) -> torch.Tensor:
    """Train-mode BatchNorm1d/2d at init (weight 1, bias 0): batch statistics per channel over
    the batch (and H, W), biased variance.

    Written out rather than F.batch_norm: torch's CPU kernel splits its sums across threads,
    so its last bits follow torch.get_num_threads(), while these per-channel reductions do
    not. The same config gives the same bytes on any machine, sequentially, in a --workers
    pool or in a Ray task.
    """
    xf = x.float() if x.dtype == torch.bfloat16 else x  # bfloat16 sums lose too much
    if x.dim() == 2:
        mean = xf.mean(0)
        xc = xf - mean
        return (xc * torch.rsqrt(xc.square().mean(0) + EPS)).to(x.dtype)
    mean = xf.mean((0, 2, 3), keepdim=True)
    xc = xf - mean
    return (xc * torch.rsqrt(xc.square().mean((0, 2, 3), keepdim=True) + EPS)).to(x.dtype)


def _batchnorm(cfg: DepthConfig, device, dtype):
    if cfg.bn_mode.value == "eval":
        return _bn_eval(cfg, device, dtype)
    if device.type == "cuda":  # one fused kernel, not five; on one GPU its bits are fixed too
        return lambda x: F.batch_norm(x, None, None, training=True, eps=EPS)
    return _bn_train


# name -> fn(cfg, device, dtype) returning the norm x -> y (affine weight 1, bias 0, as at init)
NORMS: dict[str, Callable] = {
    "batchnorm": _batchnorm,
    # over every feature of a sample: the MLP's width, or a feature map's C, H and W
    "layernorm": lambda c, d, t: lambda x: F.layer_norm(x, x.shape[1:], eps=EPS),
    "groupnorm": lambda c, d, t: lambda x: F.group_norm(x, c.groups, eps=EPS),
    "rmsnorm": lambda c, d, t: lambda x: F.rms_norm(x, x.shape[1:]),
    "none": lambda c, d, t: lambda x: x,
}

# name -> fn(cfg) returning the activation x -> y
ACTIVATIONS: dict[str, Callable] = {
    "relu": lambda c: torch.relu,
    "tanh": lambda c: torch.tanh,
    "linear": lambda c: lambda x: x,
    "gelu": lambda c: F.gelu,
    "silu": lambda c: F.silu,
    "leaky_relu": lambda c: lambda x: F.leaky_relu(x, c.negative_slope),
}


def activation(cfg: DepthConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    return ACTIVATIONS[cfg.activation.value](cfg)


def _draw(cfg: DepthConfig, shape: tuple[int, ...], index: int, device: torch.device) -> torch.Tensor:
    """One weight of `shape`, drawn from its own (seed, index) generator.

    bfloat16 weights are drawn in float32 and rounded, since some inits (orthogonal's QR)
    have no bfloat16 kernel; float64 is drawn in float64.
    """
    dtype = DTYPES[cfg.dtype.value]
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    w = torch.empty(shape, device=device, dtype=draw_dtype)
    INITS[cfg.init.value](w, generator(device, cfg.seed, WEIGHT_STREAM, index), cfg)
    return w.to(dtype)


def stage_of(cfg: DepthConfig, layer: int) -> tuple[int, int, int]:
    """(stage, channels, image size) of a ResNet block: each stage after the first doubles the
    channels and halves H and W."""
    s = layer // cfg.blocks
    return s, cfg.channels * 2**s, cfg.image_size // 2**s


def make_weight(cfg: DepthConfig, layer: int, device: torch.device):
    """Layer `layer`'s weight: (width, width) for the MLP, (C, C, k, k) for conv, and for a
    ResNet block the tuple (conv1, conv2, 1x1 skip conv or None) of its branch."""
    arch, k = cfg.arch.value, cfg.kernel_size
    if arch == "mlp":
        return _draw(cfg, (cfg.width, cfg.width), layer, device)
    if arch == "conv":
        return _draw(cfg, (cfg.channels, cfg.channels, k, k), layer, device)
    s, c, _ = stage_of(cfg, layer)
    c_in = c // 2 if s > 0 and layer % cfg.blocks == 0 else c  # a transition block widens
    skip = _draw(cfg, (c, c_in, 1, 1), 3 * layer + 2, device) if c_in != c else None
    return _draw(cfg, (c, c_in, k, k), 3 * layer, device), _draw(cfg, (c, c, k, k), 3 * layer + 1, device), skip


def input_shape(cfg: DepthConfig) -> tuple[int, ...]:
    if cfg.arch.value == "mlp":
        return cfg.batch_size, cfg.width
    return cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size


def make_input(cfg: DepthConfig, device: torch.device) -> torch.Tensor:
    dtype = DTYPES[cfg.dtype.value]
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    g = generator(device, cfg.seed, INPUT_STREAM)
    return torch.randn(input_shape(cfg), generator=g, device=device, dtype=draw_dtype).to(dtype)


def make_cotangent(cfg: DepthConfig, device: torch.device, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The fixed N(0, 1) tensor the last layer's output (of `shape`) is contracted with for --grads."""
    dtype = DTYPES[cfg.dtype.value]
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    g = generator(device, cfg.seed, GRAD_STREAM)
    return torch.randn(shape or input_shape(cfg), generator=g, device=device, dtype=draw_dtype).to(dtype)


Step = Callable  # (x, weight) -> the layer's output; a ResNet block's: (output, branch output)


def layer_fn(cfg: DepthConfig, device: torch.device | None = None) -> Step:
    """x, w -> act(norm(x @ w.T)), the notebook's Linear(bias=False) -> norm -> activation
    (with conv2d for arch conv; a residual block for arch resnet, see _resnet_block).

    `order` linear-act-norm swaps norm and activation; `residual` alpha > 0 returns
    x + alpha * f(x) instead of f(x).
    """
    device = device if device is not None else torch.device("cpu")
    norm = NORMS[cfg.norm.value](cfg, device, DTYPES[cfg.dtype.value])
    act = activation(cfg)
    if cfg.arch.value == "resnet":
        return _resnet_block(cfg, norm, act)
    lin = F.linear if cfg.arch.value == "mlp" else partial(F.conv2d, padding=cfg.kernel_size // 2)
    if cfg.order.value == "linear-norm-act":
        f = lambda x, w: act(norm(lin(x, w)))  # noqa: E731
    else:
        f = lambda x, w: norm(act(lin(x, w)))  # noqa: E731
    if cfg.residual:
        alpha = cfg.residual
        return lambda x, w: x + alpha * f(x, w)
    return f


def _resnet_block(cfg: DepthConfig, norm, act) -> Step:
    """A pre-activation (v2) block: h = act(norm(x)), f = conv(act(norm(conv(h)))), and x + alpha
    f, or, in a transition block, conv1x1(h) + alpha f with both paths at stride 2 (He et al.
    2016, "Identity mappings in deep residual networks"). Returns (output, f)."""
    pad, alpha = cfg.kernel_size // 2, cfg.residual

    def block(x, w):
        conv1, conv2, skip = w
        stride = 1 if skip is None else 2
        h = act(norm(x))
        f = F.conv2d(act(norm(F.conv2d(h, conv1, stride=stride, padding=pad))), conv2, padding=pad)
        shortcut = x if skip is None else F.conv2d(h, skip, stride=stride)
        return shortcut + alpha * f, f

    return block
