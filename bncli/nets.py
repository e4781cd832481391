"""The layer stack: init, norm and activation registries, per-layer seeding, devices.

Weights are plain tensors, not nn.Linear modules: building a module runs PyTorch's default
init, which a study would then throw away. Each weight is drawn once, on the target device,
from a generator seeded by (seed, layer), so it can be made on demand in any order and
dropped after use: memory stays O(width^2) however deep the stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bncli.errors import BncliError

_MASK64 = (1 << 64) - 1
INPUT_STREAM, WEIGHT_STREAM = 1, 2


def stream_seed(seed: int, stream: int, index: int = 0) -> int:
    """A well-mixed 63-bit seed from (seed, stream, index) (splitmix64 finaliser)."""
    h = 0
    for part in (seed, stream, index):
        h = (h + (part & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def generator(device: torch.device, seed: int, stream: int, index: int = 0) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, stream, index))
    return g


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when available, else cpu. A CUDA device that is not there is a usage error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BncliError(f"--device {spec}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BncliError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                             f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def _default_linear_(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)


# name -> fn(weight, generator, cfg) filling the weight in place
INITS: dict[str, Callable] = {
    "kaiming": lambda w, g, c: torch.nn.init.kaiming_normal_(
        w, mode="fan_in", nonlinearity="relu", generator=g),
    "kaiming_uniform": lambda w, g, c: torch.nn.init.kaiming_uniform_(
        w, mode="fan_in", nonlinearity="relu", generator=g),
    "xavier": lambda w, g, c: torch.nn.init.xavier_normal_(w, generator=g),
    "xavier_uniform": lambda w, g, c: torch.nn.init.xavier_uniform_(w, generator=g),
    "normal": lambda w, g, c: torch.nn.init.normal_(w, 0.0, c.init_std, generator=g),
    "orthogonal": lambda w, g, c: torch.nn.init.orthogonal_(w, generator=g),
    "default": lambda w, g, c: _default_linear_(w, g),
}

NORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # train-mode BatchNorm1d at init (weight 1, bias 0): batch statistics, biased variance
    "batchnorm": lambda x: F.batch_norm(x, None, None, training=True, eps=1e-5),
    "layernorm": lambda x: F.layer_norm(x, x.shape[-1:], eps=1e-5),
    "none": lambda x: x,
}

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


def make_weight(cfg, layer: int, device: torch.device) -> torch.Tensor:
    """Layer `layer`'s (width, width) weight, drawn from its own (seed, layer) generator.

    bfloat16 weights are drawn in float32 and rounded, since some inits (orthogonal's QR)
    have no bfloat16 kernel; float64 is drawn in float64.
    """
    dtype = DTYPES[cfg.dtype.value]
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    w = torch.empty(cfg.width, cfg.width, device=device, dtype=draw_dtype)
    INITS[cfg.init.value](w, generator(device, cfg.seed, WEIGHT_STREAM, layer), cfg)
    return w.to(dtype)


def make_input(cfg, device: torch.device) -> torch.Tensor:
    dtype = DTYPES[cfg.dtype.value]
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    g = generator(device, cfg.seed, INPUT_STREAM)
    return torch.randn(cfg.batch_size, cfg.width, generator=g, device=device, dtype=draw_dtype).to(dtype)


def layer_fn(cfg) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """x, w -> act(norm(x @ w.T)), the notebook's Linear(bias=False) -> norm -> activation."""
    norm, act = NORMS[cfg.norm.value], ACTIVATIONS[cfg.activation.value]
    return lambda x, w: act(norm(F.linear(x, w)))
