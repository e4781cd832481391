"""The closed choices of every study, as str Enums so `--help` lists them.

Kept free of heavy imports: the CLI needs these names before it needs torch or pydantic.
"""

from enum import Enum


class Choice(str, Enum):
    """A closed choice that reads as its value wherever it is formatted (str(), f-strings,
    format()): `kaiming`, never `Init.kaiming`."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Init(Choice):
    kaiming = "kaiming"  # kaiming_normal_, fan_in, relu gain
    kaiming_uniform = "kaiming_uniform"
    xavier = "xavier"  # xavier_normal_
    xavier_uniform = "xavier_uniform"
    normal = "normal"  # N(0, init_std^2)
    trunc_normal = "trunc_normal"  # N(0, init_std^2) cut at +-2 init_std
    lecun_normal = "lecun_normal"  # N(0, init_gain^2 / fan_in)
    orthogonal = "orthogonal"  # scaled by init_gain
    default = "default"  # what nn.Linear does on its own: U(-1/sqrt(fan_in), 1/sqrt(fan_in))


class Arch(Choice):
    mlp = "mlp"  # Linear(bias=False) -> norm -> activation, the notebook's
    conv = "conv"  # Conv2d(C, C, k, padding k // 2, bias=False) -> norm -> activation
    resnet = "resnet"  # pre-activation (v2) residual blocks in stages; transitions halve H, W


class Norm(Choice):
    batchnorm = "batchnorm"
    layernorm = "layernorm"
    groupnorm = "groupnorm"  # `groups` groups of width / groups features, per sample
    rmsnorm = "rmsnorm"
    none = "none"


class Activation(Choice):
    relu = "relu"
    tanh = "tanh"
    linear = "linear"
    gelu = "gelu"  # exact (erf) GELU
    silu = "silu"
    leaky_relu = "leaky_relu"  # slope `negative_slope` below zero


class BNMode(Choice):
    train = "train"  # batch statistics, as during training
    eval = "eval"  # running statistics, which at init are 0 and 1: almost the identity


class Order(Choice):
    linear_norm_act = "linear-norm-act"  # the notebook
    linear_act_norm = "linear-act-norm"


class DType(Choice):
    float32 = "float32"
    float64 = "float64"
    bfloat16 = "bfloat16"


class FloatType(Choice):
    """The dtypes of the BatchNorm studies (running-stats, convergence): their checks against
    float64 formulas have no bfloat16 tolerance."""

    float32 = "float32"
    float64 = "float64"


class InputKind(Choice):
    constant = "constant"  # channel c holds c + 1, as in the notebook
    randn = "randn"  # seeded N(0, 1), fresh each iteration


class Format(Choice):
    table = "table"  # rich tables and summary lines, for people
    csv = "csv"  # exactly the result's CSV file
    json = "json"  # one document: study, status, settings, info and rows (non-finite numbers as null)


class Backend(Choice):
    local = "local"  # this machine: one process, or a spawn pool with --workers
    ray = "ray"  # one Ray task per run, on a local instance or a cluster
