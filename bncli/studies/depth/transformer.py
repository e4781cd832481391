"""A transformer's residual stream at init: `depth` blocks of multi-head self-attention and an
MLP on (batch, tokens, width) token matrices.

    bncli depth-study --arch transformer --depth 24 --width 256 --tokens 64 --heads 4 --norm layernorm

Pre-LN (`--norm-position pre`) blocks are h = x + alpha attn(norm(x)), x + ... = h + alpha mlp(norm(h));
post-LN blocks h = norm(x + alpha attn(x)), norm(h + alpha mlp(h)); without a skip connection
(`--residual 0`) the `x +` and `h +` go. attn is softmax(Q K^T / sqrt(head dim)) V in each head
(`--causal`: a token sees itself and those before it), the heads side by side, then O; mlp is
W2 act(W1 y) with mlp_ratio x width hidden units (`--mlp-ratio 0`: attention only). A pre-LN
stack's output is norm(x) of its last block's stream: --grads contracts that with its
cotangent (Xiong et al.'s final LayerNorm). No biases,
as nn.TransformerEncoderLayer(bias=False) at init. Every projection is drawn by the init from
its own stream, its fan-in from its shape. A row of layers.csv is a block's output; the norm
sees each token as a sample (its (batch x tokens, width) rows), so layernorm and rmsnorm
normalise every token over its features, batchnorm every feature over the batch's tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from bncli.runtime import torch_dtype
from bncli.studies.depth import theory
from bncli.studies.depth.net import Net, Step, draw

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:  # torch loads on first use: `bncli runs` resolves a config's defaults (its arch's check) without it
    from bncli.lazy import lazy

    torch, F = lazy("torch"), lazy("torch.nn.functional")

IDS: list[str] = []
BRANCH = False  # a block has two branches; the rows are the residual stream
RESIDUAL = 1.0  # alpha: the identity skip, as in every transformer
SMALLER = "--tokens, --batch-size, --width, --heads, --mlp-ratio or --depth"
PROJECTIONS = 6  # Q, K, V, O, W1, W2: the weight streams of a block


def check(net: Net, given: set[str]) -> dict[str, Any]:
    if net.width % net.heads:
        raise ValueError(
            f"heads must divide width for arch transformer: width {net.width} is not a multiple of heads {net.heads}"
        )
    return {}


def features(net: Net) -> tuple[int, str, int]:
    return net.width, "width", 1  # a token is a sample of the norm


def input_shape(net: Net) -> tuple[int, ...]:
    return net.batch_size, net.tokens, net.width


def hidden(net: Net) -> int:
    return net.mlp_ratio * net.width


def make_weight(net: Net, layer: int, device: torch.device) -> tuple[Any, ...]:
    """(Q, K, V, O, W1, W2) of block `layer` as nn.Linear weights, (out, in); W1 and W2 None
    without an MLP."""
    d, h, i = net.width, hidden(net), PROJECTIONS * layer
    q, k, v, o = (draw(net, (d, d), i + j, device) for j in range(4))
    if not h:
        return q, k, v, o, None, None
    return q, k, v, o, draw(net, (h, d), i + 4, device), draw(net, (d, h), i + 5, device)


def step(net: Net, device: torch.device) -> Step:
    """x, (Q, K, V, O, W1, W2) -> the block's output, (batch, tokens, width)."""
    norm = net.norm.build(net, device, torch_dtype(net.dtype))
    act = net.activation.build(net)
    b, t, d, heads = net.batch_size, net.tokens, net.width, net.heads
    alpha, skip, pre = net.residual, net.skip, net.norm_position == "pre"

    def per_token(x: torch.Tensor) -> torch.Tensor:
        return norm(x.reshape(b * t, d)).view(b, t, d)

    def attention(y: torch.Tensor, w: tuple[Any, ...]) -> torch.Tensor:
        def split(p: torch.Tensor) -> torch.Tensor:  # (batch, heads, tokens, head dim)
            return F.linear(y, p).view(b, t, heads, d // heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(w[0]), split(w[1]), split(w[2]), is_causal=net.causal)
        return F.linear(a.transpose(1, 2).reshape(b, t, d), w[3])

    def mlp(y: torch.Tensor, w: tuple[Any, ...]) -> torch.Tensor:
        return F.linear(act(F.linear(y, w[4])), w[5])

    def add(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return x + out if alpha == 1.0 else x + alpha * out  # alpha 1: one pass fewer, the same sum

    def sublayer(x: torch.Tensor, f: Any, w: tuple[Any, ...]) -> torch.Tensor:
        if pre:
            out = f(per_token(x), w)
            return add(x, out) if skip else out
        return per_token(add(x, f(x, w)) if skip else f(x, w))

    def block(x: torch.Tensor, w: tuple[Any, ...]) -> torch.Tensor:
        x = sublayer(x, attention, w)
        return sublayer(x, mlp, w) if w[4] is not None else x

    return block


def readout(net: Net, device: torch.device) -> Any:
    """A pre-LN transformer's output is its final norm's of the stream (Xiong et al.'s, and
    nn.TransformerEncoder's `norm`): what --grads contracts with its cotangent. A post-LN
    block's output is normalised already."""
    if net.norm_position == "post":
        return lambda x: x
    norm = net.norm.build(net, device, torch_dtype(net.dtype))
    return lambda x: norm(x.reshape(-1, net.width)).view(x.shape)


def stage(net: Net, layer: int) -> int:
    return 0


def rows(x: torch.Tensor) -> torch.Tensor:
    return x  # (batch, tokens, width): every token a sample of each feature


def matrices(net: Net, rows: torch.Tensor) -> torch.Tensor:
    """Each sample's (tokens, width) matrix: erank and token_cos are per sample, averaged over the batch."""
    return rows.view(net.batch_size, net.tokens, net.width)


def output_elements(net: Net) -> int:
    return net.batch_size * net.tokens * net.width


def weight_elements(net: Net) -> int:
    return 4 * net.width * net.width + 2 * net.width * hidden(net)


def attention_elements(net: Net) -> int:
    """Values in one block's attention matrices: batch x heads x tokens^2."""
    return net.batch_size * net.heads * net.tokens * net.tokens


def layer_macs(net: Net) -> int:
    """The projections', and Q K^T's and P V's (batch x tokens^2 x width each)."""
    tokens = net.batch_size * net.tokens
    return tokens * weight_elements(net) + 2 * tokens * net.tokens * net.width


def activations(net: Net) -> int:
    """Outputs a block holds at once, in units of its output: about twelve token matrices (the
    norm's, Q, K, V and their copies, the heads' output, the sums), the MLP's two hidden ones
    and the attention's scores and weights, two batch x heads x tokens^2 matrices."""
    held = 12 * output_elements(net) + 2 * net.batch_size * net.tokens * hidden(net) + 2 * attention_elements(net)
    return -(-held // output_elements(net))


def sizes(net: Net) -> str:
    return (
        f"transformer: depth {net.depth}, width {net.width}, tokens {net.tokens}, heads {net.heads}, "
        f"mlp_ratio {net.mlp_ratio}, batch_size {net.batch_size} (attention: batch x heads x tokens^2 = "
        f"{attention_elements(net):.3g} values a block)"
    )


def held(net: Net) -> str:
    return f"up to {weight_elements(net)} values"


def theory_std(net: Net) -> np.ndarray:
    """Predicted std of each block's output: the mean field of docs/theory.md.

    Two numbers per block: q, the stream's second moment per entry, and c, the covariance of
    two different tokens of a sample per feature (their cosine is c / q). A branch's last
    projection has zero-mean weights drawn apart from its input, so what a branch adds to q and
    c adds exactly; an MLP of a normalised token is exact given its input; attention's share
    depends on its weights P, for which the mean field averages softmax over Gaussian logits
    (theory.attention_kernel). nan where it does not apply: a causal mask over several tokens
    (the tokens are not alike), a norm whose statistics mix the samples (train-mode batchnorm),
    an activation the quadrature cannot take.
    """
    out = np.full(net.depth, np.nan)
    d, h, t = net.width, hidden(net), net.tokens
    group = net.norm.group(net, d, 1)
    if (net.causal and t > 1) or net.norm.across_samples(net):
        return out
    act = net.activation.build(net)
    var = net.init.weight_variance
    s_q, s_k, s_v, s_o = (var(net, d, d) for _ in range(4))
    s_1, s_2 = (var(net, d, h), var(net, h, d)) if h else (0.0, 0.0)
    scale = net.norm.scale(net)
    alpha2 = net.residual * net.residual

    def cos(q: float, c: float) -> float:
        return c / q if q > 0 else 0.0

    def normed(q: float, c: float) -> tuple[float, float]:  # (q, c) of norm(x): a token normalised to mean square 1
        return (1.0, cos(q, c)) if group is not None else (q * scale, c * scale)

    def attention(q: float, c: float) -> tuple[float, float]:
        kern, cross = theory.attention_kernel(s_q * d * q * s_k * d * q, cos(q, c), t, d // net.heads)
        gain = s_v * d * s_o * d * q
        return gain * kern, gain * cross

    def mlp(q: float, c: float) -> tuple[float, float]:
        v = s_1 * d * q
        second = s_2 * h * net.activation.moments(net, v)[1]
        return second, second * theory.act_correlation(act, net.activation.homogeneous(net), v, cos(q, c))

    def sublayer(q: float, c: float, f: Any) -> tuple[float, float]:
        if net.norm_position == "pre":
            fq, fc = f(*normed(q, c))
            return (q + alpha2 * fq, c + alpha2 * fc) if net.skip else (fq, fc)
        fq, fc = f(q, c)
        return normed(*((q + alpha2 * fq, c + alpha2 * fc) if net.skip else (fq, fc)))

    q, c = 1.0, 0.0  # N(0, 1) tokens, independent
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(net.depth):
            q, c = sublayer(q, c, attention)
            if h:
                q, c = sublayer(q, c, mlp)
            if not math.isfinite(q):
                out[i:] = math.inf
                break
            out[i] = math.sqrt(q)
    return out
