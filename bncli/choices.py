"""The closed choices of every study, as str Enums so `--help` lists them.

Kept free of heavy imports: the CLI needs these names before it needs torch or pydantic.
"""

from enum import Enum


class Init(str, Enum):
    kaiming = "kaiming"  # kaiming_normal_, fan_in, relu gain
    kaiming_uniform = "kaiming_uniform"
    xavier = "xavier"  # xavier_normal_
    xavier_uniform = "xavier_uniform"
    normal = "normal"  # N(0, init_std^2)
    orthogonal = "orthogonal"
    default = "default"  # what nn.Linear does on its own: U(-1/sqrt(fan_in), 1/sqrt(fan_in))


class Norm(str, Enum):
    batchnorm = "batchnorm"
    layernorm = "layernorm"
    none = "none"


class Activation(str, Enum):
    relu = "relu"
    tanh = "tanh"
    linear = "linear"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"
    bfloat16 = "bfloat16"


class InputKind(str, Enum):
    constant = "constant"  # channel c holds c + 1, as in the notebook
    randn = "randn"  # seeded N(0, 1), fresh each iteration


class Study(str, Enum):
    depth_study = "depth-study"
    running_stats = "running-stats"
