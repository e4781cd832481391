"""Typed, flat configs for each study, loaded from YAML and the command line.

    bncli depth-study --config configs/depth_study.yaml --depth 50

Precedence: the defaults below (the notebook's settings) < `--config FILE.yaml` < flags.
Field names are the flags' names with underscores, so a saved config.yaml is a valid --config.
"""

from __future__ import annotations

import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from bncli.choices import Activation, BNMode, DType, Init, InputKind, Norm, Order
from bncli.errors import BncliError

_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,4})?")
SEED_MAX = 2**63 - 1
INT_MAX = 2**63 - 1  # every integer field fits an int64, so no size can overflow torch or a message


def _check_device(v: Any) -> Any:
    if isinstance(v, str) and not _DEVICE.fullmatch(v):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return v


def _none_word(v: Any) -> Any:
    # YAML has no `none` literal and flags are strings: accept the word for PyTorch's None
    return None if isinstance(v, str) and v.strip().lower() in ("none", "null") else v


def _int_list(v: Any) -> Any:
    # "2,2" from a flag or YAML scalar; an int for a 1-element shape
    if isinstance(v, str):
        try:
            return [int(p) for p in v.split(",") if p.strip()]
        except ValueError:
            raise ValueError("must be comma-separated positive integers, like 2,2") from None
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    return v


def _dims_int(v: Any) -> Any:
    # a Literal of ints also takes true and 1.0 (they compare equal): a wrong type is refused
    if isinstance(v, (bool, float)):
        raise ValueError("Input should be 1, 2 or 3")
    return v


Device = Annotated[str, BeforeValidator(_check_device)]
Seed = Annotated[StrictInt, Field(ge=0, le=SEED_MAX)]
Positive = Annotated[StrictInt, Field(ge=1, le=INT_MAX)]
PosFloat = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class DepthConfig(_Config):
    """A deep MLP, Linear(bias=False) -> norm -> activation, fed N(0,1) input."""

    depth: Positive = 100  # number of layers
    width: Positive = 256  # features per layer
    batch_size: Positive = 16  # rows of the N(0,1) input
    init: Init = Init.kaiming  # weight init scheme
    init_std: PosFloat = 1.0  # std of the `normal` init; ignored by the others
    norm: Norm = Norm.batchnorm  # batchnorm uses batch statistics (train mode)
    activation: Activation = Activation.relu
    seed: Seed = 0  # seeds the input and, per layer, each weight
    device: Device = "auto"  # auto: cuda when available, else cpu
    dtype: DType = DType.float32
    keep_weights: bool = False  # build every weight up front instead of one layer at a time
    init_gain: PosFloat = 1.0  # gain of orthogonal, xavier, xavier_uniform and lecun_normal
    groups: Positive = 32  # groupnorm's number of groups; must divide width
    bn_mode: BNMode = BNMode.train  # eval: running stats, 0 and 1 at init, so almost the identity
    negative_slope: NonNegFloat = 0.01  # leaky_relu's slope below zero
    order: Order = Order.linear_norm_act  # or linear-act-norm
    residual: NonNegFloat = 0.0  # alpha > 0: each layer is x + alpha * f(x); 0: a plain stack
    grads: bool = False  # one backward pass for grad_std, weight_grad_norm (keeps every weight)
    erank: bool = False  # effective rank of every layer's output (one SVD per layer)

    @model_validator(mode="after")
    def _batchnorm_needs_two_rows(self) -> DepthConfig:
        if self.norm == Norm.batchnorm and self.bn_mode == BNMode.train and self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 with norm batchnorm "
                             "(BatchNorm cannot normalise a single sample)")
        if self.norm == Norm.groupnorm and self.width % self.groups:
            raise ValueError(f"groups must divide width for norm groupnorm: width {self.width} "
                             f"is not a multiple of groups {self.groups}")
        return self


NOTEBOOK_CHANNELS = {1: 5, 2: 6, 3: 4}
NOTEBOOK_SHAPES = {1: [1], 2: [2, 2], 3: [2, 2, 3]}


class RunningStatsConfig(_Config):
    """BatchNorm{1,2,3}d fed a few batches; its running stats checked against the formula."""

    momentum: Annotated[
        Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)] | None,
        BeforeValidator(_none_word),
    ] = 0.3  # None: PyTorch's cumulative average
    dims: Annotated[Literal[1, 2, 3], BeforeValidator(_dims_int)] = 1  # BatchNorm1d, 2d or 3d
    batch_size: Positive = 3
    num_features: Positive | None = None  # None follows dims: 5, 6, 4
    feature_shape: Annotated[list[Positive] | None, BeforeValidator(_int_list)] = None  # None follows dims
    iterations: Positive = 2
    input: InputKind = InputKind.constant
    eps: PosFloat = 1e-5
    seed: Seed = 0
    device: Device = "auto"
    dtype: Literal[DType.float32, DType.float64] = DType.float32

    @model_validator(mode="after")
    def _follow_dims(self) -> RunningStatsConfig:
        if self.num_features is None:
            self.num_features = NOTEBOOK_CHANNELS[self.dims]
        if self.feature_shape is None:
            self.feature_shape = list(NOTEBOOK_SHAPES[self.dims])
        if len(self.feature_shape) != self.dims:
            raise ValueError(f"feature_shape must have {self.dims} entries for dims {self.dims}, "
                             f"got {len(self.feature_shape)}: {show(self.feature_shape)}")
        if self.batch_size * math.prod(self.feature_shape) < 2:
            raise ValueError("batch_size x feature_shape must give at least 2 values per channel "
                             "(BatchNorm cannot normalise a single value)")
        return self


def _float_list(v: Any) -> Any:
    # "0.01,0.1,0.3" from a flag, a YAML list, or one number
    if isinstance(v, str):
        parts = [p.strip() for p in v.split(",") if p.strip()]
        try:
            return [_none_word(p) if _none_word(p) is None else float(p) for p in parts]
        except ValueError:
            raise ValueError(f"must be comma-separated numbers, like 0.01,0.1,0.3 (got {show(v)})") from None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [float(v)]
    return v


Unit = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class ConvergenceConfig(_Config):
    """BatchNorm's running estimates against the true statistics of a seeded stream."""

    momentum: Annotated[list[Unit | None] | None, BeforeValidator(_float_list)] = None  # None: 0.01,0.1,0.3
    keras_momentum: Annotated[list[Unit] | None, BeforeValidator(_float_list)] = None  # Keras K: m = 1 - K
    batch_size: Positive = 32
    num_features: Positive = 4
    iterations: Positive = 1000
    input_mean: Annotated[list[Finite], BeforeValidator(_float_list)] = [1.0]  # one, or one per channel
    input_std: Annotated[list[PosFloat], BeforeValidator(_float_list)] = [2.0]  # one, or one per channel
    eps: PosFloat = 1e-5
    seed: Seed = 0
    device: Device = "auto"
    dtype: Literal[DType.float32, DType.float64] = DType.float32

    @model_validator(mode="after")
    def _check(self) -> ConvergenceConfig:
        if self.momentum is not None and self.keras_momentum is not None:
            raise ValueError("give momentum or keras_momentum, not both (keras K is momentum 1 - K)")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm cannot normalise a single sample)")
        for name in ("input_mean", "input_std"):
            n = len(getattr(self, name))
            if n not in (1, self.num_features):
                raise ValueError(f"{name} must have 1 or num_features ({self.num_features}) values, got {n}")
        return self

    @property
    def momenta(self) -> list[float]:
        """The EMA momenta in PyTorch's convention, in order, without repeats ('none' is the
        cumulative average, which is always compared)."""
        if self.keras_momentum is not None:
            ms = [1.0 - k for k in self.keras_momentum]
        elif self.momentum is not None:
            ms = [m for m in self.momentum if m is not None]
        else:
            ms = [0.01, 0.1, 0.3]
        return list(dict.fromkeys(ms))


CONFIGS: dict[str, type[_Config]] = {"depth-study": DepthConfig, "running-stats": RunningStatsConfig,
                                     "running-stats-convergence": ConvergenceConfig}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


class _Short(reprlib.Repr):
    """repr for error messages: bounded in length and depth, whatever a YAML file holds."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 2, 40, 40, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 4

    def repr_int(self, x, level):
        # repr() of an int over 4300 digits raises ValueError; YAML hex reaches that easily
        return f"<an integer of {x.bit_length()} bits>" if x.bit_length() > 256 else super().repr_int(x, level)


show = _Short().repr  # a value as an error message shows it: one bounded line
MAX_ERRORS = 3  # problems named in one message; the rest are counted


def describe(err: ValidationError, flags: set[str] = frozenset(), source: str | None = None) -> str:
    """One line naming each bad field (as a flag when it came from one) and what is accepted."""
    parts = []
    errors = err.errors(include_url=False)
    for e in errors[:MAX_ERRORS]:
        loc = [str(p) for p in e["loc"]]
        field = loc[0] if loc else None
        if field is None:  # a model-level check: its message names the fields itself
            parts.append(str(e["msg"]).removeprefix("Value error, "))
            continue
        field = field if field.isidentifier() else show(field)  # '' or odd characters: quoted
        name = _flag(field) if field in flags else (f"{field} in {source}" if source else field)
        if len(loc) > 1 and loc[1] not in ("constrained-float", "constrained-int"):
            name += "[" + ",".join(loc[1:]) + "]"
        msg = str(e["msg"]).removeprefix("Value error, ")
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; accepted fields: " + ", ".join(_fields_of(err))
        elif got is not None and not isinstance(got, dict):
            msg += f" (got {show(got)})"
        parts.append(f"{name}: {msg}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"and {len(errors) - MAX_ERRORS} more")
    return "; ".join(parts)


def _fields_of(err: ValidationError) -> list[str]:
    return list(CONFIGS_BY_TITLE[err.title].model_fields)


CONFIGS_BY_TITLE = {cls.__name__: cls for cls in CONFIGS.values()}


def read_yaml(path: Path, what: str = "--config") -> Any:
    """Parse a YAML file with safe_load only: no tag can construct a Python object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BncliError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise BncliError(f"{what}: {path} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BncliError(f"{what}: cannot read {path}: {e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise BncliError(f"{what}: {path} is not valid YAML{where}: {what}".strip()) from None
    except yaml.YAMLError as e:
        raise BncliError(f"{what}: {path} is not valid YAML: {e}") from None
    except RecursionError:
        raise BncliError(f"{what}: {path} is nested too deeply to be a config") from None
    except ValueError as e:  # an integer over Python's 4300-digit limit
        raise BncliError(f"{what}: {path} holds a value bncli cannot read: {str(e).split(';')[0]}") from None


def validate(cls: type[_Config], data: Any, flags: set[str] = frozenset(), source: str | None = None):
    if not isinstance(data, dict):
        raise BncliError(f"{source or 'config'}: must be a mapping of field: value, "
                         f"got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str) or not _is_text(k)]
    if bad:
        raise BncliError(f"{source or 'config'}: field names must be text, got {show(bad[0])}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise BncliError(describe(e, flags, source)) from None


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")  # YAML's "\\ud800" escape gives a lone surrogate, which no file can hold
    except UnicodeEncodeError:
        return False
    return True


def load(study: str, path: Path | None = None, **flags: Any):
    """Resolve a study's config: defaults < the YAML file at `path` < flags that are not None."""
    cls = CONFIGS[study]
    data = {}
    if path is not None:
        data = read_yaml(path)
        if data is None:  # an empty file means "all defaults"
            data = {}
        if not isinstance(data, dict):
            raise BncliError(f"--config: {path} must hold a mapping of field: value, "
                             f"got {type(data).__name__}")
    given = {k: v for k, v in flags.items() if v is not None}
    return validate(cls, {**data, **given}, set(given), str(path) if path else None)
