import dataclasses

import pytest
import yaml

from dflab.core.config import (ConfigError, LabConfig, STAGES, config_from_dict, config_to_dict,
                          iter_fields, load_config, save_config)
from conftest import ROOT


def test_every_field_has_help_and_valid_default():
    for key, f, value in iter_fields(LabConfig()):
        assert f.metadata.get("help"), f"{key} has no help text"
        if "choices" in f.metadata:
            assert value in f.metadata["choices"], key
        if "min" in f.metadata:
            assert f.metadata["min"] <= value <= f.metadata["max"], key


def test_stages_are_the_design():
    # the design's eight, and the audio-visual sync detector's
    assert STAGES == ["env", "data", "preprocess", "features", "model", "train", "eval", "export",
                      "sync"]


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {lr: 0.001, epochs: 3}\nmodel: {backbone: resnet18}\n")
    cfg = load_config(p, ["train.lr=3e-4", "preprocess.square=false", "data.methods=Deepfakes"])
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3
    assert cfg.model.backbone == "resnet18"
    assert cfg.preprocess.square is False
    assert cfg.data.methods == ["Deepfakes"]


@pytest.mark.parametrize("override, words", [
    ({"train.lrr": 1}, ["train.lrr", "train.lr"]),
    ({"lr": 1}, ["'lr'", "train.lr"]),
    ({"train.epochs": 0}, ["train.epochs", "0", "1 to 1000"]),
    ({"preprocess.detector": "yunett"}, ["preprocess.detector", "yunett", "yunet"]),
    ({"train.batch_size": "big"}, ["train.batch_size", "big", "int"]),
    ({"preprocess.padding": -0.1}, ["preprocess.padding", "-0.1", "out of range"]),
    ({"data.compressions": ["c99"]}, ["data.compressions", "c99", "c23"]),
])
def test_errors_name_key_value_and_fix(override, words):
    with pytest.raises(ConfigError) as exc:
        load_config(None, override)
    for w in words:
        assert w in str(exc.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(flat)


def test_round_trip(tmp_path):
    cfg = load_config(None, {"train.lr": 5e-4, "model.backbone": "efficientnet_b7"})
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_from_dict(yaml.safe_load(path.read_text())) == cfg


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(preset):
    cfg = load_config(preset)
    assert dataclasses.is_dataclass(cfg)


def test_text_values_from_the_command_line_stay_text():
    """YAML would read `off` as False and `1e-3` as a string; each key keeps its own type."""
    cfg = load_config(None, ["train.amp=off", "train.lr=1e-3", "model.backbone=resnet10t",
                             "train.balance=true", "data.compressions=c23,c40"])
    assert cfg.train.amp == "off" and cfg.train.lr == 1e-3 and cfg.train.balance is True
    assert cfg.model.backbone == "resnet10t" and cfg.data.compressions == ["c23", "c40"]
