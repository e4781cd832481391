"""Config models: defaults, YAML loading, precedence, and clean errors."""

from pathlib import Path

import pytest
from helpers import load

from bncli.errors import BncliError
from bncli.studies.depth import DepthConfig
from bncli.studies.running_stats import RunningStatsConfig

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_notebooks():
    d = DepthConfig()
    assert (d.depth, d.width, d.batch_size, d.init, d.norm, d.activation) == (
        100,
        256,
        16,
        "kaiming",
        "batchnorm",
        "relu",
    )
    r = RunningStatsConfig()
    assert (r.momentum, r.dims, r.batch_size, r.num_features, r.feature_shape, r.iterations) == (0.3, 1, 3, 5, [1], 2)


@pytest.mark.parametrize("dims,features,shape", [(1, 5, [1]), (2, 6, [2, 2]), (3, 4, [2, 2, 3])])
def test_running_stats_follows_dims(dims, features, shape):
    cfg = RunningStatsConfig(dims=dims)
    assert (cfg.num_features, cfg.feature_shape) == (features, shape)


def test_shipped_configs_equal_the_defaults():
    assert load("depth-study", ROOT / "configs/depth_study.yaml") == DepthConfig()
    assert load("running-stats", ROOT / "configs/running_stats.yaml") == RunningStatsConfig()


def test_precedence_defaults_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("depth: 7\nwidth: 32\n")
    cfg = load("depth-study", f, width=64, init=None)
    assert (cfg.depth, cfg.width, cfg.batch_size) == (7, 64, 16)


def test_saved_yaml_round_trips(tmp_path):
    cfg = load("running-stats", None, momentum="none", dims=2, feature_shape="3,1")
    f = tmp_path / "saved.yaml"
    f.write_text(cfg.to_yaml())
    assert load("running-stats", f) == cfg
    assert cfg.momentum is None and cfg.feature_shape == [3, 1]


def test_field_errors_name_the_field_and_the_accepted_values(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("init: kaimin\n")
    with pytest.raises(
        BncliError,
        match=r"init in .*c.yaml: 'kaimin' is not one of kaiming, kaiming_uniform, "
        r".*\(did you mean 'kaiming'\?\)",
    ):
        load("depth-study", f)
    with pytest.raises(BncliError, match=r"--depth: Input should be greater than or equal to 1"):
        load("depth-study", None, depth=0)


@pytest.mark.parametrize(
    "text,match",
    [
        ("depth: [1\n", r"not valid YAML at line 2"),
        ("dpeth: 3\n", r"dpeth in .*: not a field of depth-study; did you mean 'depth'\?"),
        ("depth: abc\n", r"depth in .*valid integer"),
        ("depth: 2.5\n", r"depth in .*valid integer"),
        ("depth: true\n", r"depth in .*valid integer"),
        ("init_std: .nan\n", r"init_std in .*finite"),
        ("- 1\n- 2\n", r"must hold a mapping"),
        ("!!python/object/apply:os.system ['true']\n", r"not valid YAML.*python/object/apply"),
    ],
)
def test_bad_yaml_is_one_clean_line(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(BncliError, match=match) as e:
        load("depth-study", f)
    assert "\n" not in str(e.value)


def test_empty_file_means_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    assert load("depth-study", f) == DepthConfig()


def test_missing_file():
    with pytest.raises(BncliError, match="--config: file not found"):
        load("depth-study", Path("/nonexistent/x.yaml"))


@pytest.mark.parametrize(
    "flags,match",
    [
        ({"norm": "batchnorm", "batch_size": 1}, "batch_size must be at least 2 with norm batchnorm"),
        ({"device": "gpu"}, "--device: .*auto, cpu, cuda or cuda:N"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_depth_cross_field_errors(flags, match):
    with pytest.raises(BncliError, match=match):
        load("depth-study", None, **flags)


@pytest.mark.parametrize(
    "flags,match",
    [
        ({"momentum": 1.5}, "--momentum: Input should be less than or equal to 1"),
        ({"momentum": -0.1}, "--momentum: Input should be greater than or equal to 0"),
        ({"dims": 4}, "--dims: 4 is not one of 1, 2, 3"),
        ({"dims": 2, "feature_shape": "2"}, "feature_shape must have 2 entries"),
        ({"batch_size": 1}, "at least 2 values per channel"),
        ({"feature_shape": "a,b"}, "--feature-shape: .*comma-separated"),
    ],
)
def test_running_stats_errors(flags, match):
    with pytest.raises(BncliError, match=match):
        load("running-stats", None, **flags)


def test_layernorm_accepts_batch_of_one():
    assert load("depth-study", None, norm="layernorm", batch_size=1).batch_size == 1


def test_yaml_as_people_write_it(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("eps: 1e-5\nseed: 2\n")  # YAML 1.1 would read 1e-5 as text
    assert load("running-stats", f).eps == 1e-5
    f.write_text("init_std: -2.5E+3\n")  # read as the number, so refused for its range, not as text
    with pytest.raises(BncliError, match=r"init_std in .*: Input should be greater than 0 \(got -2500.0\)"):
        load("depth-study", f)
    f.write_text("depth: 3\nwidth: 8\ndepth: 4\n")
    twice = r"not valid YAML at line 3, column 1: 'depth' is given twice \(first at line 1\)"
    with pytest.raises(BncliError, match=twice):
        load("depth-study", f)
    f.write_text("eps: 1e-5\n")
    saved = tmp_path / "saved.yaml"
    saved.write_text(load("running-stats", f).to_yaml())
    assert load("running-stats", saved).eps == 1e-5
