"""Run configuration: preset loading, dotted overrides, strict validation with helpful errors, config hash."""

from __future__ import annotations

import re

import pytest
import yaml

from wmtp.config import ConfigError, RunConfig, config_hash, dump_yaml, load_config, preset_path


def test_default_is_tiny_preset():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.model.n_heads == 4
    assert cfg.model.d_model == 128
    assert cfg.model.n_layers == 4
    assert cfg.model.n_attn_heads == 4
    assert cfg.model.max_seq_len == 512
    assert cfg.model.head1_is_trunk_layer is True
    assert cfg.weighting.name == "uniform" and cfg.weighting.normalize == "mean"
    assert cfg.weighting.head_coefs is None
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.train.max_steps == 300 and cfg.train.batch_size == 16
    assert cfg.train.precision == "fp32"
    assert cfg.seed == 0 and cfg.run_dir == "runs/tiny"


def test_preset_name_and_path_give_the_same_config():
    default = load_config()
    assert load_config("tiny") == default
    assert load_config(preset_path("tiny")) == default
    assert load_config(str(preset_path("tiny"))) == default


def test_every_key_of_the_preset_file_is_applied():
    tree = yaml.safe_load(preset_path("tiny").read_text())
    dumped = load_config().model_dump(mode="json")

    def walk(node, ref, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, ref[key], f"{prefix}{key}.")
            else:
                assert ref[key] == value, f"{prefix}{key}"

    walk(tree, dumped, "")


def test_overrides_parse_types():
    cfg = load_config(
        overrides=[
            "optim.lr=3e-4",
            "model.n_heads=2",
            "train.precision=bf16",
            "weighting.head_coefs=[1,0.5]",
            "model.head1_is_trunk_layer=false",
            "optim.grad_clip=null",
            "seed=7",
        ]
    )
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.n_heads == 2 and isinstance(cfg.model.n_heads, int)
    assert cfg.train.precision == "bf16"
    assert cfg.weighting.head_coefs == [1.0, 0.5]
    assert cfg.model.head1_is_trunk_layer is False
    assert cfg.optim.grad_clip is None
    assert cfg.seed == 7
    # untouched values stay
    assert cfg.model.d_model == 128 and cfg.train.max_steps == 300


def test_overrides_into_absent_nested_section():
    cfg = load_config(overrides=["data.synthetic.n_problems=50", "weighting.clip_max=2"])
    assert cfg.data.synthetic.n_problems == 50
    assert cfg.weighting.clip_max == 2.0


def test_later_override_wins():
    assert load_config(overrides=["seed=1", "seed=2"]).seed == 2


def test_load_from_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\nmodel:\n  n_heads: 3\n  d_model: 64\n")
    cfg = load_config(path, ["model.n_layers=2"])
    assert cfg.seed == 5 and cfg.model.n_heads == 3 and cfg.model.d_model == 64 and cfg.model.n_layers == 2
    # fields not in the file take the model defaults
    assert cfg.optim.lr == RunConfig().optim.lr


def test_dump_yaml_round_trips(tmp_path):
    cfg = load_config(overrides=["optim.lr=3e-4", "model.n_heads=2", "weighting.head_coefs=[1,0.5]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("foo=1", "foo", ["data", "model", "optim", "run_dir", "seed", "train", "weighting"]),
        ("optim.lrr=1", "optim.lrr", ["lr", "weight_decay", "warmup_steps", "beta1"]),
        ("model.n_head=2", "model.n_head", ["n_heads", "d_model", "n_layers"]),
        ("data.synthetic.sed=1", "data.synthetic.sed", ["seed", "n_problems"]),
    ],
)
def test_unknown_key_names_key_and_lists_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    msg = str(err.value)
    assert key in msg
    for name in allowed:
        assert re.search(rf"\b{re.escape(name)}\b", msg), f"{name!r} not listed in: {msg}"


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  n_heads: 2\n  heads: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "model.heads" in str(err.value) and "n_heads" in str(err.value)


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.n_heads=0", "model.n_heads"),
        ("model.n_heads=two", "model.n_heads"),
        ("train.precision=fp8", "train.precision"),
        ("weighting.normalize=foo", "weighting.normalize"),
        ("optim.lr=-1", "optim.lr"),
        ("train.batch_size=0", "train.batch_size"),
    ],
)
def test_bad_value_names_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert key in str(err.value)


def test_several_errors_are_all_named():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["model.n_heads=0", "train.precision=fp8", "optim.lrr=1"])
    msg = str(err.value)
    assert "model.n_heads" in msg and "train.precision" in msg and "optim.lrr" in msg


@pytest.mark.parametrize("coefs", ["[1,0.5]", "[1,1,1,1,1]"])
def test_head_coefs_length_must_match_n_heads(coefs):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"weighting.head_coefs={coefs}"])  # tiny preset: n_heads=4
    assert "head_coefs" in str(err.value) and "n_heads" in str(err.value)


def test_head_coefs_matching_n_heads_is_accepted():
    cfg = load_config(overrides=["model.n_heads=3", "weighting.head_coefs=[1,0.5,0.25]"])
    assert cfg.weighting.head_coefs == [1.0, 0.5, 0.25]


def test_other_cross_field_checks():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["weighting.clip_min=2", "weighting.clip_max=1"])
    assert "clip_min" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["model.d_model=30"])  # not divisible by 4 attention heads
    assert "d_model" in str(err.value)


def test_malformed_override_raises():
    with pytest.raises(ConfigError):
        load_config(overrides=["model.n_heads"])
    with pytest.raises(ConfigError):
        load_config(overrides=["seed.x=1"])  # seed is not a section


def test_config_hash_stable_and_sensitive():
    a, b = load_config(), load_config()
    h = config_hash(a)
    assert isinstance(h, str) and re.fullmatch(r"[0-9a-f]{16}", h)
    assert config_hash(b) == h
    assert config_hash(load_config(overrides=["seed=1"])) != h
    assert config_hash(load_config(overrides=["optim.lr=3e-4"])) != h
    assert config_hash(load_config(overrides=["model.n_heads=2"])) != h
    assert config_hash(load_config(overrides=["run_dir=elsewhere/x"])) == h
    # a value equal to the default gives the same hash whether written or not
    assert config_hash(load_config(overrides=["optim.lr=3e-3"])) == h


def test_missing_config_file():
    with pytest.raises(ConfigError) as err:
        load_config("/nonexistent/dir/conf.yaml")
    assert "conf.yaml" in str(err.value)


def test_non_mapping_yaml_raises(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        load_config(path)


def test_max_len_beyond_max_seq_len_refused_for_a_model_built_from_config():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.max_len=1024", "model.max_seq_len=512"])
    assert "data.max_len=1024" in str(err.value) and "model.max_seq_len=512" in str(err.value)
    assert load_config(None, ["data.max_len=512", "model.max_seq_len=512"]).data.max_len == 512
    # a pretrained trunk's positions come from its checkpoint: the config's max_seq_len is not checked
    cfg = load_config(None, ["data.max_len=1024", "model.max_seq_len=512", "model.pretrained=/some/hf/dir"])
    assert cfg.data.max_len == 1024
    cfg = load_config(None, ["data.max_len=1024", "model.max_seq_len=512", "model.init_from=/some/run/model"])
    assert cfg.data.max_len == 1024
