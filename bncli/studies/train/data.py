"""The train study's data sets, all offline and seeded: digits (shipped), gaussians, teacher.

    python -c "from bncli.studies.train import data; print(data.digits()[0].shape)"

digits.npz is scikit-learn's bundled copy of the UCI optical recognition of handwritten digits
test set (1797 8x8 images, values 0..16), stored once by `store_digits()` from
sklearn.datasets.load_digits (needs the optional extra: pip install 'bncli[data]');
DIGITS_LICENSE.txt beside it gives the licences. Features are scaled to [0, 1] and
standardised with the training set's mean and std; the split is fixed (a permutation drawn
once from seed 0), the same for every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bncli.errors import BncliError
from bncli.runtime import Stream, generator
from bncli.studies.train.spec import train_samples

HERE = Path(__file__).parent
DIGITS_FILE = HERE / "digits.npz"


@dataclass(frozen=True)
class Data:
    """Train and test sets on the device: float features (n, input_dim), int64 labels (n,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 64) uint8 in 0..16, labels (1797,) uint8), as sklearn's load_digits gives them."""
    with np.load(DIGITS_FILE) as f:
        return f["data"], f["target"]


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # digits' always-blank border pixels
    return (x_train - mean) / std, (x_test - mean) / std


def _split(x: torch.Tensor, y: torch.Tensor, train: int, perm: torch.Tensor) -> Data:
    x, y = x[perm], y[perm]
    xtr, xte = _standardise(x[:train], x[train:])
    return Data(xtr, y[:train], xte, y[train:])


def load(cfg: Any, device: torch.device, dtype: torch.dtype) -> Data:
    """The run's data set on `device` in `dtype` (drawn on the device from the run's seed, but
    digits' fixed split)."""
    train = train_samples(cfg.data, cfg.samples)
    if cfg.data == "digits":
        images, labels = digits()
        x = torch.as_tensor(images, dtype=torch.float64).div(16).to(device, dtype)
        y = torch.as_tensor(labels, dtype=torch.int64).to(device)
        perm = torch.randperm(len(y), generator=generator(torch.device("cpu"), 0, Stream.DATA)).to(device)
        return _split(x, y, train, perm)
    g = generator(device, cfg.seed, Stream.DATA)
    n, d, k = cfg.samples, cfg.input_dim, cfg.classes
    if cfg.data == "gaussians":
        means = torch.randn(k, d, generator=g, device=device, dtype=dtype) * (2 / math.sqrt(d))
        y = torch.randint(0, k, (n,), generator=g, device=device)
        x = means[y] + torch.randn(n, d, generator=g, device=device, dtype=dtype)
    else:  # teacher: argmax of W2 tanh(W1 x)
        hidden = 64
        w1 = torch.randn(hidden, d, generator=g, device=device, dtype=dtype) / math.sqrt(d)
        w2 = torch.randn(k, hidden, generator=g, device=device, dtype=dtype) / math.sqrt(hidden)
        x = torch.randn(n, d, generator=g, device=device, dtype=dtype)
        y = (torch.tanh(x @ w1.T) * 3) @ w2.T
        y = y.argmax(1)
    return _split(x, y, train, torch.arange(n, device=device))


class Batches:
    """batch() for consecutive steps, each epoch's permutation drawn once."""

    def __init__(self, n_train: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.b, self.seed, self.device = n_train, batch_size, seed, device
        self.per_epoch = n_train // batch_size
        self.epoch, self.perm = -1, torch.empty(0, dtype=torch.int64)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            g = generator(torch.device("cpu"), self.seed, Stream.SHUFFLE, epoch)
            self.epoch, self.perm = epoch, torch.randperm(self.n, generator=g).to(self.device)
        return self.perm[k * self.b : (k + 1) * self.b]


def store_digits() -> Path:
    """Write digits.npz from scikit-learn's load_digits (the optional extra bncli[data])."""
    import importlib

    try:
        datasets = importlib.import_module("sklearn.datasets")
    except ImportError:
        raise BncliError("data digits: scikit-learn is needed to store them: pip install 'bncli[data]'") from None
    d = datasets.load_digits()
    np.savez_compressed(DIGITS_FILE, data=d.data.astype(np.uint8), target=d.target.astype(np.uint8))
    return DIGITS_FILE
