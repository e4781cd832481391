"""bncli: experiments on how initialization and normalization shape the signal in deep nets.

    bncli depth-study --init kaiming
    bncli running-stats --momentum 0.3

Importing this package is cheap: torch, pandas and matplotlib load only when a study runs.
"""

__version__ = "0.1.0"
