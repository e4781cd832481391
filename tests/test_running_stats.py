"""Running stats: the notebook's oracle, torch.nn.BatchNorm*d, and the update formula."""

import json
import math

import pytest
import torch
from helpers import load

from bncli.studies import running_stats as rs

CPU = torch.device("cpu")


def run(**kw):
    cfg = load("running-stats", None, device="cpu", **kw)
    return cfg, rs.run(cfg, CPU)


def test_notebook_oracle():
    _, res = run(momentum=0.3)
    t = res.table
    last = t[t.iteration == 1]
    assert last["running_mean"].tolist() == pytest.approx([0.51, 1.02, 1.53, 2.04, 2.55], rel=1e-6)
    assert last["running_var"].tolist() == pytest.approx([0.49] * 5, rel=1e-6)
    first = t[t.iteration == 0]
    assert first["running_mean"].tolist() == pytest.approx([0.3, 0.6, 0.9, 1.2, 1.5], rel=1e-6)
    assert first["running_var"].tolist() == pytest.approx([0.7] * 5, rel=1e-6)
    assert list(t.columns) == [
        "iteration",
        "channel",
        "batch_mean",
        "batch_var",
        "running_mean",
        "running_var",
        "expected_mean",
        "expected_var",
    ]


@pytest.mark.parametrize(
    "dims,shapes",
    [
        (1, {"running_mean": [5], "running_var": [5], "weight": [5], "bias": [5], "num_batches_tracked": []}),
        (2, {"running_mean": [6], "running_var": [6], "weight": [6], "bias": [6], "num_batches_tracked": []}),
        (3, {"running_mean": [4], "running_var": [4], "weight": [4], "bias": [4], "num_batches_tracked": []}),
    ],
)
def test_notebook_shapes(dims, shapes):
    _, res = run(dims=dims)
    assert res.info["shapes"] == shapes


def reference(cfg):
    """A fresh nn.BatchNorm*d fed the same batches; plus batch stats by plain torch ops."""
    bn = [torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d][cfg.dims - 1](
        cfg.num_features, eps=cfg.eps, momentum=cfg.momentum
    )
    rows = []
    for t in range(cfg.iterations):
        x = rs.make_batch(cfg, t, CPU)
        bn(x)
        xc = x.transpose(0, 1).reshape(cfg.num_features, -1).double()
        rows.append((xc.mean(1), xc.var(1, unbiased=True), bn.running_mean.clone(), bn.running_var.clone()))
    return rows


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.3, 0.9, 1.0, "none"])
def test_agrees_with_torch_batchnorm_on_random_input(dims, momentum):
    cfg, res = run(dims=dims, momentum=momentum, input="randn", iterations=6, batch_size=4, seed=3)
    for t, (mean, var, r_mean, r_var) in enumerate(reference(cfg)):
        it = res.table[res.table.iteration == t]
        assert it["batch_mean"].tolist() == pytest.approx(mean.tolist(), rel=1e-6, abs=1e-7)
        assert it["batch_var"].tolist() == pytest.approx(var.tolist(), rel=1e-6)
        assert it["running_mean"].tolist() == pytest.approx(r_mean.tolist(), rel=1e-6, abs=1e-7)
        assert it["running_var"].tolist() == pytest.approx(r_var.tolist(), rel=1e-6)
        # the independent float64 formula agrees with torch
        assert it["expected_mean"].tolist() == pytest.approx(r_mean.tolist(), rel=1e-5, abs=1e-6)
        assert it["expected_var"].tolist() == pytest.approx(r_var.tolist(), rel=1e-5)


def test_cumulative_average_is_the_plain_mean_of_batch_stats():
    _, res = run(momentum="none", input="randn", iterations=5)
    t = res.table
    ch0 = t[t.channel == 0]
    assert ch0["running_mean"].iloc[-1] == pytest.approx(ch0["batch_mean"].mean(), rel=1e-5)
    assert ch0["running_var"].iloc[-1] == pytest.approx(ch0["batch_var"].mean(), rel=1e-5)


@pytest.mark.parametrize("m", [0.1, 0.5])
def test_constant_stream_closed_form(m):
    # constant input: batch mean c, batch var 0, so r_t = c * (1 - (1 - m)^t), var (1 - m)^t
    _, res = run(momentum=m, iterations=8)
    for _, row in res.table.iterrows():
        t, c = row["iteration"] + 1, row["channel"] + 1
        assert row["running_mean"] == pytest.approx(c * (1 - (1 - m) ** t), rel=1e-5)
        assert row["running_var"] == pytest.approx((1 - m) ** t, rel=1e-5)


def test_randn_input_is_seeded_and_fresh_each_iteration():
    cfg = load("running-stats", None, input="randn", device="cpu")
    assert torch.equal(rs.make_batch(cfg, 0, CPU), rs.make_batch(cfg, 0, CPU))
    assert not torch.equal(rs.make_batch(cfg, 0, CPU), rs.make_batch(cfg, 1, CPU))
    assert math.prod(rs.make_batch(cfg, 0, CPU).shape) == 3 * 5 * 1


def test_same_bytes_on_any_number_of_threads():
    from bncli.runtime import torch_threads

    tables = []
    for threads in (1, 3):
        with torch_threads(threads):
            _, res = run(momentum=0.1, input="randn", iterations=4, batch_size=16, num_features=64)
        tables.append(res.table.to_csv())
    assert tables[0] == tables[1]


class BiasedBatchNorm(torch.nn.BatchNorm1d):
    """A BatchNorm with a bug bncli's check exists for: its running_var follows the biased batch variance."""

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        m = self.momentum if self.momentum is not None else 1.0 / (int(self.num_batches_tracked) + 1)
        with torch.no_grad():
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var)
            self.num_batches_tracked += 1
        shape = [1, -1, *[1] * (x.dim() - 2)]
        return (x - mean.view(shape)) / (var.view(shape) + self.eps).sqrt()


@pytest.mark.parametrize("momentum", [0.3, None])
def test_the_random_batch_check_catches_a_biased_variance(monkeypatch, cli, momentum):
    """The notebook's constant input cannot tell the biased variance from the unbiased (every batch
    variance is 0), so the table's rows pass with a wrong BatchNorm; the random batch's check fails."""
    real = rs.batchnorm
    monkeypatch.setattr(
        rs, "batchnorm", lambda cfg, device: BiasedBatchNorm(cfg.num_features, momentum=cfg.momentum).to(device)
    )
    flags = ["--momentum", "none" if momentum is None else momentum, "--device", "cpu", "--name", "wrong"]
    r = cli("running-stats", *flags)
    assert r.exit_code == 0, r.output
    assert "torch matches the update formula on all 20 values" in r.output  # the rows cannot see it
    assert "check on a random batch (2 values per channel" in r.output and "DIFFERS from the formula by" in r.output
    check = json.loads((cli.out / "running-stats" / "wrong" / "meta.json").read_text())["random_check"]
    assert check["matches"] is False and check["max_error"] > 0.01
    monkeypatch.setattr(rs, "batchnorm", real)
    ok = rs.random_check(load("running-stats", momentum=momentum, device="cpu"), CPU)
    assert ok["matches"] is True and ok["max_error"] < 1e-6
