"""An MLP whose layers all share one weight: a linear-RNN cell unrolled `depth` times.

    bncli depth-study --arch tied --norm batchnorm      # once registered: ARCHS["tied"] = HELP

A new architecture of the depth study is a module like this one, with the interface of
bncli/studies/depth/net.py (Arch), and one line in ARCHS. This one borrows everything from the
MLP but its weights: every layer gets layer 0's. Its theory is the MLP's: at large width the
forward pass's second moments do not see that the weights are tied.
"""

from __future__ import annotations

from bncli.studies.depth import mlp

HELP = "an MLP whose layers share one weight (an unrolled RNN cell)"
IDS, BRANCH, RESIDUAL, SMALLER = mlp.IDS, mlp.BRANCH, mlp.RESIDUAL, mlp.SMALLER
check, features, input_shape, step, stage, rows, matrices, readout = (
    mlp.check,
    mlp.features,
    mlp.input_shape,
    mlp.step,
    mlp.stage,
    mlp.rows,
    mlp.matrices,
    mlp.readout,
)
output_elements, weight_elements, layer_macs, activations = (
    mlp.output_elements,
    mlp.weight_elements,
    mlp.layer_macs,
    mlp.activations,
)
sizes, held, theory_std = mlp.sizes, mlp.held, mlp.theory_std


def make_weight(net, layer, device):
    return mlp.make_weight(net, 0, device)  # the one weight, drawn by layer 0's generator
