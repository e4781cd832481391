"""The depth study's per-layer statistics: one record each, declared once.

    python -c "from bncli.studies.depth import stats; print(stats.columns('mlp'))"

A record says how the statistic is computed (on a chunk of layers at once, on one layer, by
the backward pass, or by the architecture's theory), whether a non-finite value of it means
the layer diverged, which boolean field turns it on, and which architectures' rows have it.
layers.csv's columns and their order, the divergence mask, what is computed and left empty,
and the table in docs/statistics.md all come from STATS. Definitions and sources:
docs/statistics.md (made from these records by docs/make_docs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
else:
    from bncli.lazy import lazy

    torch = lazy("torch")

BROCK = 'Brock, De, Smith, ICLR 2021, "Characterizing signal propagation to close the performance gap in unnormalized ResNets"'  # noqa: E501


class Chunk:
    """A chunk of layers' outputs as one (layers, samples, channels) tensor, and the float64
    intermediates its statistics share, each computed once, when first asked for.

    Every floating-point sum has one output per layer and channel, or per layer, never a single
    number: torch's CPU kernels then sum each output in a fixed order whatever the threads, so
    the bits do not depend on them. The passes are in float64: squares of outputs near
    float32's max finite stay finite, so only a non-finite output reads as diverged.
    """

    def __init__(self, xs: torch.Tensor) -> None:
        self.xs = xs
        self.n = xs.shape[1] * xs.shape[2]  # values per layer

    @cached_property
    def chan_mean(self) -> torch.Tensor:  # (layers, channels)
        return self.xs.mean(1, dtype=torch.float64)

    @cached_property
    def chan_var(self) -> torch.Tensor:  # the per-channel biased variance, averaged over channels
        return (self.xs - self.chan_mean[:, None]).square_().mean(1).mean(1)  # xs - mean is float64: no copy first

    @cached_property
    def mean(self) -> torch.Tensor:
        return self.chan_mean.mean(1)

    @cached_property
    def var(self) -> torch.Tensor:  # every value's biased variance (the total variance)
        return self.chan_var + (self.chan_mean - self.mean[:, None]).square().mean(1)

    @cached_property
    def flat(self) -> torch.Tensor:  # min, max and counts are exact in any order: one pass over each layer
        return self.xs.flatten(1)


def _std(c: Chunk) -> torch.Tensor:  # unbiased, as the notebook's x.std()
    return (c.var * (c.n / (c.n - 1))).sqrt() if c.n > 1 else c.var * float("nan")


def _abs_max(c: Chunk) -> torch.Tensor:
    return torch.maximum(-c.flat.amin(1), c.flat.amax(1)).to(torch.float64)  # no abs() temporary


def _zero_fraction(c: Chunk) -> torch.Tensor:  # x.bool() is 3x faster than x == 0 on CPU; nan is nonzero
    return (c.n - c.flat.bool().sum(1)).to(torch.float64) / c.n


def chan_var(f: torch.Tensor) -> torch.Tensor:
    """Average over channels of the (biased) variance over N, H and W: Brock et al.'s average
    channel variance, here of a residual branch's output."""
    cm = f.mean((0, 2, 3), keepdim=True, dtype=torch.float64)
    return (f - cm).square_().mean((0, 2, 3)).mean()


@dataclass(frozen=True)
class Layer:
    """One layer's output as a `layer` statistic is given it: its (samples, channels) `rows`,
    its residual branch's output (or None), and `matrices`, the (k, m, channels) matrices the
    architecture averages rank statistics over (Arch.matrices: the rows themselves, k = 1, or a
    transformer's (batch, tokens, width))."""

    rows: torch.Tensor
    branch: torch.Tensor | None
    matrices: torch.Tensor


def erank(x: torch.Tensor) -> torch.Tensor:
    """Roy and Vetterli's effective rank: exp(entropy of the singular values / their sum), of an
    (m, channels) matrix, or of each matrix of a (k, m, channels) stack averaged over the k.

    Scale-free, so each matrix is first divided by its abs max (no overflow in the SVD); a
    non-finite matrix gives nan (the layer has diverged), an all-zero one gives 0.
    """
    x = x.float() if x.dtype != torch.float64 else x
    x = x[None] if x.dim() == 2 else x
    finite = torch.isfinite(x).all(-1).all(-1)
    top = x.abs().amax((-2, -1))
    ok = (finite & (top > 0))[:, None, None]
    safe = torch.where(ok, x / top[:, None, None], torch.zeros_like(x))
    s = torch.linalg.svdvals(safe)
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    r = torch.exp(-torch.special.xlogy(p, p).sum(-1))
    r = torch.where(total[:, 0] > 0, r, torch.zeros_like(r))
    return torch.where(finite, r, torch.full_like(r, float("nan"))).mean()


def token_cos(x: torch.Tensor) -> torch.Tensor:
    """The mean cosine similarity between the m rows (tokens) of an (m, channels) matrix, over
    the m (m - 1) ordered pairs of different rows, or of each matrix of a (k, m, channels) stack
    averaged over the k.

    In float64, with each row divided by its norm: |sum of the unit rows|^2 less the number of
    them (each has |u|^2 = 1) is the sum over pairs, so no m x m matrix is built. A zero row
    counts as orthogonal to every other; one row alone (m = 1) gives nan, and so does a
    non-finite matrix.
    """
    xs = x.to(torch.float64, copy=True)
    xs = xs[None] if xs.dim() == 2 else xs
    norms = torch.linalg.vector_norm(xs, dim=-1, keepdim=True)
    u = xs.div_(norms.clamp_min(torch.finfo(torch.float64).tiny))  # in place: xs is this function's copy
    pairs = u.sum(1).square().sum(-1) - (norms[..., 0] > 0).sum(-1)
    m = xs.shape[1]
    return (pairs / (m * (m - 1)) if m > 1 else pairs * float("nan")).mean()


Kind = Literal["id", "chunk", "layer", "grad", "theory"]


@dataclass(frozen=True)
class Stat:
    """One column of layers.csv.

    kind: `id` (what identifies the row), `chunk` (compute(chunk) gives the statistic of every
    layer of a Chunk at once), `layer` (compute(layer) of one layer's output, a Layer), `grad`
    (from the one backward pass) or `theory` (the architecture's prediction).
    """

    name: str
    kind: Kind
    what: str  # the definition, as docs/statistics.md gives it
    source: str = ""
    on: str | None = None  # the boolean config field that turns it on; None: always on
    archs: tuple[str, ...] | None = None  # the architectures whose rows have the column; None: all
    watch: bool = False  # a non-finite value means the layer diverged
    branch: bool = False  # computed from a residual branch's output: empty where the architecture has none
    compute: Callable[..., torch.Tensor] | None = None

    def __post_init__(self) -> None:  # the registry is checked as it is built, not when a run needs it
        if (self.kind in ("chunk", "layer")) != (self.compute is not None):
            need = "needs" if self.compute is None else "has no"
            raise TypeError(f"statistic {self.name}: a {self.kind} statistic {need} compute")


STATS: list[Stat] = [
    Stat("layer", "id", "the layer, from 0 (a ResNet's block)"),
    Stat("stage", "id", "the ResNet stage of the block (0 for a conv stack)", archs=("conv", "resnet")),
    Stat("mean", "chunk", "`x.mean()`", "the notebook", watch=True, compute=lambda c: c.mean),
    Stat("std", "chunk", "`x.std()`, unbiased over all `B n` entries", "the notebook", watch=True, compute=_std),
    Stat("abs_max", "chunk", "`x.abs().max()`", watch=True, compute=_abs_max),
    Stat("zero_fraction", "chunk", "share of exact zeros (dead ReLUs)", watch=True, compute=_zero_fraction),
    Stat(
        "chan_sq_mean",
        "chunk",
        "`mean_c (mean_b x[b, c])^2`: the average over channels of the squared per-channel mean over the batch",
        BROCK,
        compute=lambda c: c.chan_mean.square().mean(1),
    ),
    Stat(
        "chan_var",
        "chunk",
        "`mean_c var_b x[b, c]`, the per-channel variance over the batch (biased, ddof 0, as "
        "their `jnp.var`), averaged over channels",
        "same",
        compute=lambda c: c.chan_var,
    ),
    Stat(
        "branch_var",
        "layer",
        'the residual branch\'s `chan_var`, before it is scaled and added (their "residual average channel variance")',
        "same",
        archs=("conv", "resnet"),
        branch=True,
        compute=lambda layer: chan_var(layer.branch.detach()),
    ),
    Stat(
        "erank",
        "layer",
        "`exp(-sum_k p_k log p_k)`, `p_k = s_k / sum_j s_j`, `s` the singular values of `x` (a "
        "transformer's: of each sample's tokens x width matrix, averaged over the batch)",
        'Roy and Vetterli, EUSIPCO 2007, "The effective rank: a measure of effective dimensionality"',
        on="erank",
        compute=lambda layer: erank(layer.matrices),
    ),
    Stat(
        "token_cos",
        "layer",
        "mean cosine similarity `cos(x[b, t], x[b, u])` over the pairs of different tokens `t != u` of a "
        "sample, averaged over the batch: 1 when the tokens have collapsed to one direction",
        'Dong, Cordonnier, Loukas, ICML 2021, "Attention is not all you need: pure attention loses rank '
        'doubly exponentially with depth"',
        archs=("transformer",),
        compute=lambda layer: token_cos(layer.matrices),
    ),
    Stat(
        "grad_std",
        "grad",
        "std (unbiased) of `dL/dx_l`, `L = sum(x_last * c)`, `c` a fixed N(0, 1) tensor",
        "Yang et al., ICLR 2019",
        on="grads",
    ),
    Stat("weight_grad_norm", "grad", "Frobenius norm of `dL/dW_l`", on="grads"),
    Stat(
        "theory_std",
        "theory",
        "the mean-field prediction of `std`, derived in [theory.md](theory.md)",
        "Poole et al. 2016; Yang et al. 2019",
    ),
    Stat(
        "theory_chan_sq_mean",
        "theory",
        "the mean-field prediction of `chan_sq_mean`, from the per-pixel maps of [theory.md](theory.md); "
        "nan unless the norm takes out each channel's mean",
        BROCK,
        archs=("conv",),
    ),
    Stat(
        "theory_chan_var",
        "theory",
        "the mean-field prediction of `chan_var`, from the same maps",
        "same",
        archs=("conv",),
    ),
]


def flags() -> list[str]:
    """The boolean config fields that turn statistics on (grads, erank)."""
    return list(dict.fromkeys(s.on for s in STATS if s.on))


def columns(arch: str) -> list[str]:
    """layers.csv's columns for rows of `arch`, in order."""
    return [s.name for s in STATS if s.archs is None or arch in s.archs]


def columns_of(arch: str, kind: Kind) -> list[str]:
    """The columns of `kind` that rows of `arch` have (its theory columns: one function of each one's name)."""
    return [s.name for s in STATS if s.kind == kind and (s.archs is None or arch in s.archs)]


def computed(arch: str, on: Collection[str], branch: bool) -> list[Stat]:
    """The statistics a run of `arch` computes, with the flags `on` set and (`branch`) a residual branch."""
    present = [s for s in STATS if s.archs is None or arch in s.archs]
    return [s for s in present if (s.on is None or s.on in on) and (not s.branch or branch)]


def buffered(arch: str, on: Collection[str], branch: bool) -> list[Stat]:
    """The statistics kept on the device during a run, in the buffer's column order: every chunk
    statistic, then the enabled per-layer ones."""
    stats = computed(arch, on, branch)
    return [s for s in stats if s.kind == "chunk"] + [s for s in stats if s.kind == "layer"]


def of_chunk(stats: list[Stat], xs: torch.Tensor) -> torch.Tensor:
    """The chunk statistics of a chunk of layers' outputs (layers x samples x channels), as one
    on-device (layers, k) tensor: one set of kernels per chunk, not per layer (on a GPU the
    launches, not the arithmetic, cost the time at the notebook's sizes)."""
    c = Chunk(xs)
    return torch.stack([s.compute(c) for s in stats if s.compute is not None], 1)
