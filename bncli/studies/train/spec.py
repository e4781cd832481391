"""What the train study's declaration and its run share, importing nothing heavy: the data sets'
sizes and layers.csv's name.

    python -c "from bncli.studies.train import spec; print(spec.train_samples('digits', 1797))"
"""

from __future__ import annotations

LAYERS_CSV = "layers.csv"
DIGITS = {"samples": 1797, "classes": 10, "input_dim": 64}
DIGITS_TRAIN = 1500  # of 1797: the rest is the test set
BUILT_IN = {"samples": 2000, "classes": 10, "input_dim": 32}
TEST_SHARE = 0.2  # of a built-in data set's samples held out


def train_samples(data: str, samples: int) -> int:
    """The training set's size: digits' fixed 1500, or all but TEST_SHARE of the samples."""
    return DIGITS_TRAIN if data == "digits" else samples - max(1, round(TEST_SHARE * samples))
