"""--tensorboard DIR: the run's curves and layers as TensorBoard event files (torch.utils.tensorboard).

    bncli train --record-every 10 --tensorboard tb && tensorboard --logdir tb

Scalars loss, train_acc and test_acc against step; per layer the recorded statistics
(layer_03/std, ...) and, at each record, a histogram of the layer's output on the probe batch
(activations/layer_03). Needs the optional extra: pip install 'bncli[tensorboard]'.
"""

from __future__ import annotations

import math
from typing import Any

from bncli.errors import BncliError

INSTALL = "pip install 'bncli[tensorboard]'"


def check() -> None:
    """Refuse --tensorboard, in one line, where tensorboard is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise BncliError(f"tensorboard: the tensorboard package is not installed: {INSTALL}")


class Writer:
    """A SummaryWriter on DIR; histograms as the run records, the scalars at its end."""

    def __init__(self, logdir: str) -> None:
        check()
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(log_dir=logdir)

    def histograms(self, step: int, outputs: list[Any]) -> None:
        for i, h in enumerate(outputs):
            self.w.add_histogram(f"activations/layer_{i:02d}", h.detach().float().flatten().cpu(), step)

    def write(self, table: Any, layers: Any) -> None:
        for _, row in table.iterrows():
            step = int(row["step"])
            for col in ("loss", "train_acc", "test_acc"):
                v = float(row[col])
                if not math.isnan(v):
                    self.w.add_scalar(col, v, step)
        stats = [c for c in layers.columns if c not in ("step", "layer", "stage")]
        for _, row in layers.iterrows():
            for col in stats:
                v = float(row[col])
                if not math.isnan(v):
                    self.w.add_scalar(f"layer_{int(row['layer']):02d}/{col}", v, int(row["step"]))
        self.w.flush()
        self.w.close()
