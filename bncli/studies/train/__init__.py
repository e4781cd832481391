"""Train the depth study's networks, with a classifier head, and watch their layers as they learn.

The same architectures, inits, norms and activations as the depth study (every one of its
fields), on offline seeded data: scikit-learn's 8x8 digits (shipped in the package), a
mixture of Gaussian classes or a random teacher's labels. BatchNorm trains on batch
statistics and updates its running ones; evaluation uses the running ones. Every
--record-every steps, the depth study's per-layer statistics (the same records) on a fixed
probe batch, the 15th, 50th and 85th percentiles of each layer's pre-activation (Ioffe and
Szegedy's Figure 1) and each layer's gradient norm. A non-finite loss stops the run:
diverged, at that step. Writes train.csv, layers.csv, config.yaml and meta.json under
OUT/train/NAME/.

Example: bncli train --data digits --depth 3 --width 100 --activation sigmoid --steps 300
Example: bncli train --data gaussians --depth 20 --width 256 --lr 1 --record-every 10
"""

# This module declares the study (its config, columns and names) and loads nothing heavy; the
# data (data.py), the network and the loop (engine.py) and the plots (plots.py) load when a run
# needs them.

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bncli import fields, report
from bncli.errors import plural
from bncli.fields import field
from bncli.runtime import check_fits, itemsize, resolve_device
from bncli.studies import depth
from bncli.studies.base import Count, MeanSd, Result, Summary
from bncli.studies.train.spec import BUILT_IN, DIGITS, train_samples

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from bncli.figures import Options
else:
    from bncli.lazy import lazy

    np = lazy("numpy")

DATA = {
    "digits": "scikit-learn's 8x8 digits (1797 images, 64 features, 10 classes), a fixed 1500 / 297 split",
    "gaussians": "a seeded mixture of Gaussian classes (unit noise around N(0, 4 / input_dim) means)",
    "teacher": "N(0, 1) inputs labelled by a random two-layer tanh teacher network",
}
OPTIMIZERS = {"sgd": "torch.optim.SGD (momentum_sgd, weight_decay)", "adam": "torch.optim.Adam (weight_decay)"}


# The depth study's config, every field of it, is this one's base: the network is the same.
class TrainConfig(depth.CONFIG):
    """The depth study's networks with a classifier head, trained on offline seeded data."""

    depth: int = field(3, ge=1, help="number of layers (resnet: stages x blocks; transformer: blocks)")
    width: int = field(100, ge=1, help="features per layer")
    batch_size: int = field(64, ge=1, help="training samples per step (BatchNorm's batch)")
    dtype: str = fields.dtype(fields.FLOAT_DTYPES, "no bfloat16: training loses too much in it")
    data: str = field("digits", choices=DATA, help="the data set")
    samples: int = field(None, ge=10, shown="1797 for digits, else 2000", help="samples, train and test together")
    classes: int = field(None, ge=2, shown="10", help="classes (gaussians, teacher)")
    input_dim: int = field(None, ge=1, shown="64 for digits, else 32", help="features of a sample (gaussians, teacher)")
    optimizer: str = field("sgd", choices=OPTIMIZERS, help="the optimizer")
    lr: float = field(0.1, gt=0, help="learning rate")
    momentum_sgd: float = field(0.0, ge=0, le=0.999, help="SGD's momentum")
    weight_decay: float = field(0.0, ge=0, help="L2 weight decay (the optimizer's own)")
    steps: int = field(500, ge=1, help="optimizer steps")
    eval_every: int = field(50, ge=1, metavar="N", help="train and test accuracy every N steps (and the last)")
    record_every: int = field(
        0, ge=0, metavar="N", help="per-layer statistics every N steps (and the last) on the probe batch; 0: none"
    )
    probe_size: int = field(128, ge=2, help="the probe batch: the first samples of the training set")
    tensorboard: str = field(
        None, none="no event files", metavar="DIR", help="also write TensorBoard event files to DIR"
    )

    def resolve(self, given: set[str]) -> dict[str, Any]:
        """The depth study's checks, then the data's sizes (digits' are fixed) and the batches'."""
        out = super().resolve(given)
        if self.grads:
            raise ValueError("grads is the depth study's one backward pass; train records grad_norm (record_every)")
        if self.bn_mode != "train":
            raise ValueError("bn_mode: train trains on batch statistics and evaluates on running ones; leave it out")
        fixed = DIGITS if self.data == "digits" else BUILT_IN
        sizes = {}
        for name, value in fixed.items():
            given_value = getattr(self, name)
            if self.data == "digits" and given_value is not None and given_value != value:
                raise ValueError(f"{name} is {value} for data digits (it is fixed), got {given_value}")
            sizes[name] = value if given_value is None else given_value
        train = train_samples(self.data, sizes["samples"])
        if sizes["classes"] > train:
            raise ValueError(f"classes {sizes['classes']} must not exceed the {train} training samples")
        if self.batch_size > train:
            raise ValueError(
                f"batch_size {self.batch_size} is more than the {train} training samples of data {self.data}"
            )
        return {**out, **sizes}


NAME = "train"
CONFIG = TrainConfig
OPTIONS = fields.NoOptions
CSV = "train.csv"
COLUMNS = ["step", "loss", "train_acc", "test_acc", "lr", "last_p15", "last_p50", "last_p85"]
ID_COLUMNS = ["step"]
TEXT_COLUMNS: list[str] = []
INFO = {"diverged_at": int | None, "steps_done": int, "final_test_acc": float | None}
LABEL_KEYS = ["norm", "optimizer", "lr"]
PLOT = "train.png"
RUN_PLOT = False
SUMMARY = ["final loss", "final test_acc", "best test_acc", "diverged"]
COMPARE_METRIC = "loss"


def columns(settings: dict[str, Any]) -> list[str]:
    return COLUMNS


def label(cfg: Any) -> str:
    return f"{cfg.data}-{cfg.norm}-lr{cfg.lr:g}"


def progress_total(cfg: Any) -> int | None:
    return cfg.steps if cfg.steps * cfg.depth * cfg.batch_size * cfg.width > 1e8 else None


def describe_size(cfg: Any) -> str:
    return f"data {cfg.data} ({cfg.samples} samples), {depth.describe_size(cfg)}, steps {cfg.steps}"


def estimate_bytes(cfg: Any) -> int:
    """Peak memory: the depth study's with every weight held and a backward pass, times 4 for
    the weights' gradients and the optimizer's state, plus the data and the recorded rows."""
    net = depth.network(cfg)
    arch = net.arch_module()
    elt = itemsize(cfg.dtype)
    weights = net.depth * arch.weight_elements(net) * elt * 4
    rows = max(cfg.batch_size, cfg.probe_size) * arch.output_elements(net) // max(1, net.batch_size)
    acts = arch.activations(net) * rows * max(elt, 4) * (1 + 2 * net.depth)
    data = cfg.samples * cfg.input_dim * 8 * 2
    records = (cfg.steps // max(1, cfg.record_every) + 1) * net.depth * 16 * 8 if cfg.record_every else 0
    return int(weights + acts + data + records + cfg.steps * 64)


def preflight(cfg: Any) -> torch.device:
    device = resolve_device(cfg.device)
    if cfg.tensorboard:
        from bncli.studies.train import tensorboard

        tensorboard.check()
    check_fits(device, estimate_bytes(cfg), describe_size(cfg), f"a smaller {depth.network(cfg).arch_module().SMALLER}")
    return device


def run(cfg: Any, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    """Train; stop at the first non-finite loss (engine.train)."""
    from bncli.studies.train import engine

    return engine.train(cfg, device, progress)


# -- rendering ----------------------------------------------------------------------------------

SHOWN_ROWS = 12


def render(run: Any, every: int | None = None) -> list[Any]:
    """The evaluated steps (about SHOWN_ROWS of them, the last always) and a summary line."""
    table = run.table
    evals = table[table["test_acc"].notna()] if len(table) else table
    shown = sorted(set(range(0, len(evals), max(1, math.ceil(len(evals) / SHOWN_ROWS)))) | {len(evals) - 1})
    keep = evals.iloc[[i for i in shown if i >= 0]]
    cols = ["step", "loss", "train_acc", "test_acc", "lr"]
    t: Table = report.table(cols)
    for _, row in keep.iterrows():
        t.add_row(*[str(int(row[c])) if c == "step" else report.fmt(float(row[c])) for c in cols])
    return [t, summary(table, run.meta)]


def summary(table: pd.DataFrame, meta: dict[str, Any]) -> Text:
    lines = []
    evals = table[table["test_acc"].notna()] if len(table) else table
    if len(evals):
        last = evals.iloc[-1]
        lines.append(
            f"after {plural(int(last['step']), 'step')}: test accuracy {report.num(last['test_acc'])}, "
            f"train accuracy {report.num(last['train_acc'])}, best test accuracy {report.num(evals['test_acc'].max())}"
        )
    if meta.get("diverged_at") is not None:
        lines.append(f"diverged: non-finite loss at step {meta['diverged_at']}")
    if meta.get("status") == "interrupted":
        lines.append(f"interrupted after {plural(int(meta.get('steps_done') or 0), 'step')}")
    return Text("\n".join(lines))


def summarize(runs: list[pd.DataFrame]) -> Summary:
    """SUMMARY over a config's finished runs: the last step's loss and test accuracy over the
    seeds that did not diverge, the best test accuracy, and how many diverged."""
    ok = [r for r in runs if r["status"].iloc[0] == "ok"]
    evals = [r[r["test_acc"].notna()] for r in ok]
    return {
        "final loss": MeanSd.over([float(r["loss"].iloc[-1]) for r in ok], len(runs)),
        "final test_acc": MeanSd.over([float(e["test_acc"].iloc[-1]) for e in evals if len(e)], len(runs)),
        "best test_acc": MeanSd.over([float(e["test_acc"].max()) for e in evals if len(e)], len(runs)),
        "diverged": Count(sum(r["status"].iloc[0] == "diverged" for r in runs), len(runs)),
    }


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: Options | None = None) -> Any:
    from bncli.studies.train import plots

    return plots.draw(plt, table, metric, opts)


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    return None
