"""Pipeline files: every shipped file validates; wrong types/values name the file and field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bcikit.config import ConfigError, apply_overrides, load_config, validate_config

PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.toml"))
MINIMAL = {"pipeline": {"name": "x"}, "model": {"name": "EEGNet"}}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipelines_validate(path):
    cfg = load_config(path)
    assert cfg.pipeline.name
    # the resolved config written into run folders reads back to the same config
    again = validate_config(tomllib.loads(cfg.to_toml()), source="roundtrip")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("section, field, value, expected", [
    ("train", "epochs", -3, "[train] epochs must be an integer >= 1; got -3"),
    ("train", "epochs", 2.5, "[train] epochs must be an integer >= 1; got 2.5"),
    ("train", "epochs", True, "[train] epochs must be an integer >= 1; got True"),
    ("train", "lr", "fast", "[train] lr must be a number > 0; got 'fast'"),
    ("train", "device", "tpu", "[train] device must be 'auto', 'cpu'"),
    ("evaluate", "protocol", "random", "[evaluate] protocol must be one of"),
    ("preprocess", "bandpass", [30, 8], "[preprocess] bandpass must be a pair [low, high]"),
    ("data", "classes", "left", "[data] classes must be a list of strings"),
])
def test_bad_values_name_file_and_field(section, field, value, expected):
    raw = {**MINIMAL, section: {field: value}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw, source="pipelines/bad.toml")
    msg = str(err.value)
    assert msg.startswith("pipelines/bad.toml: ")
    assert expected in msg


def test_unknown_field_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown field 'epoch'\. Did you mean 'epochs'\?"):
        validate_config({**MINIMAL, "train": {"epoch": 3}}, source="p.toml")
    with pytest.raises(ConfigError, match=r"unknown section \[trian\]\. Did you mean 'train'\?"):
        validate_config({**MINIMAL, "trian": {}}, source="p.toml")


def test_missing_required():
    with pytest.raises(ConfigError, match=r"the section \[model\] is required"):
        validate_config({"pipeline": {"name": "x"}}, source="p.toml")
    with pytest.raises(ConfigError, match=r"\[model\] name is required"):
        validate_config({"pipeline": {"name": "x"}, "model": {}}, source="p.toml")


def test_overrides_parse_toml_values():
    raw = apply_overrides(MINIMAL, ["train.epochs=2", "train.lr=1e-4", "data.classes=['a','b']",
                                    "train.device=cpu", "model.params.drop_prob=0.25"])
    cfg = validate_config(raw)
    assert cfg.train.epochs == 2 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.classes == ["a", "b"] and cfg.train.device == "cpu"
    assert cfg.model.params == {"drop_prob": 0.25}
    assert MINIMAL == {"pipeline": {"name": "x"}, "model": {"name": "EEGNet"}}  # not mutated
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(MINIMAL, ["train.epochs"])


def test_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_extends_merges_tables_and_reports_cycles(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.toml").write_text(
        '[pipeline]\nname = "base"\n[data.simulate]\nn_subjects = 9\nseed = 3\n'
        '[train]\nepochs = 100\nlr = 0.001\n[evaluate]\nprotocol = "chronological"\n')
    (tmp_path / "child.toml").write_text(
        '[pipeline]\nname = "child"\nextends = "shared/base.toml"\n[data.simulate]\nseed = 4\n'
        '[model]\nname = "EEGNet"\n[train]\nepochs = 5\n')
    cfg = load_config(tmp_path / "child.toml")
    assert cfg.pipeline.name == "child" and cfg.pipeline.extends is None
    assert cfg.data.simulate == {"n_subjects": 9, "seed": 4}
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.001
    assert cfg.evaluate.protocol == "chronological"
    (tmp_path / "loop.toml").write_text('[pipeline]\nname = "x"\nextends = "loop.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.toml")
    (tmp_path / "dangling.toml").write_text('[pipeline]\nname = "x"\nextends = "none.toml"\n')
    with pytest.raises(ConfigError, match="extends names 'none.toml'"):
        load_config(tmp_path / "dangling.toml")


# ---------------------------------------------------------------------------------- kinds
def test_encoding_kind_has_its_own_sections():
    raw = {"pipeline": {"name": "enc", "kind": "encoding"},
           "encoding": {"alignments": ["language"], "n_boot": 50, "bootstrap": "oof"}}
    cfg = validate_config(raw, source="enc.toml")
    assert cfg.kind == "encoding" and cfg.model is None and cfg.train is None
    assert cfg.data.simulator == "movie_seeg"  # the kind's simulator by default
    assert cfg.encoding.alignments == ["language"] and cfg.encoding.q == 0.05
    assert set(cfg.to_dict()) == {"pipeline", "data", "encoding", "output"}
    again = validate_config(tomllib.loads(cfg.to_toml()), source="roundtrip")
    assert again.to_dict() == cfg.to_dict()
    # a decoding pipeline has no [encoding], and needs [model]
    assert validate_config(MINIMAL).encoding is None
    assert "encoding" not in validate_config(MINIMAL).to_dict()


@pytest.mark.parametrize("raw, expected", [
    ({"pipeline": {"name": "e", "kind": "encoding"}, "model": {"name": "EEGNet"}},
     "enc.toml: a kind = 'encoding' pipeline has no section [model]"),
    ({"pipeline": {"name": "e", "kind": "encoding"}, "encoding": {"alignments": ["audio"]}},
     "enc.toml: [encoding] alignments must be a non-empty list of distinct values among "
     "['language', 'vision']; got ['audio']"),
    ({"pipeline": {"name": "e", "kind": "encoding"}, "encoding": {"q": 1.5}},
     "enc.toml: [encoding] q must be a number in (0, 1); got 1.5"),
    ({"pipeline": {"name": "e", "kind": "encoding"}, "data": {"simulator": "motor_imagery"}},
     "enc.toml: [data] simulator must be one of ['movie_seeg'] in a kind = 'encoding' pipeline"),
    ({"pipeline": {"name": "d"}, "model": {"name": "EEGNet"}, "encoding": {}},
     "enc.toml: a kind = 'decoding' pipeline has no section [encoding]"),
    ({"pipeline": {"name": "d"}}, "enc.toml: the section [model] is required."),
    ({"pipeline": {"name": "d", "kind": "decode"}, "model": {"name": "EEGNet"}},
     "enc.toml: [pipeline] kind must be one of"),
])
def test_kind_errors_name_file_and_field(raw, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(raw, source="enc.toml")
    assert str(err.value).startswith(expected), str(err.value)
