"""A model of your own for bncli probe: a function returning an nn.Module, its keyword arguments
given with --model-arg.

    bncli probe configs/models/mlp.py:build --input-shape 64 --model-arg norm=none
"""

from torch import nn


class Block(nn.Module):
    """Linear -> norm -> ReLU, added to the input: the repeated block probe taps by default."""

    def __init__(self, width: int, norm: str) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        self.norm = nn.BatchNorm1d(width) if norm == "batchnorm" else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return x + self.act(self.norm(self.linear(x)))


def build(width: int = 64, depth: int = 12, norm: str = "batchnorm") -> nn.Module:
    return nn.Sequential(*[Block(width, norm) for _ in range(depth)])
