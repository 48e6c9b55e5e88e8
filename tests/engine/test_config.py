import pytest
import yaml

from attnzoo.engine.config import (config_from_dict, config_to_dict, load_config, parse_override,
                                   recipe_names, save_config)
from attnzoo.errors import UserError


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["optim.lr=0.05", "schedule.milestones=[81, 122]",
                             "model.kwargs.attn=se", "train.amp=bf16", "data.download=true"])
    assert cfg.optim.lr == 0.05
    assert cfg.schedule.milestones == [81, 122]
    assert cfg.model.kwargs == {"attn": "se"}
    assert cfg.train.amp == "bf16" and cfg.data.download is True


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'; did you mean 'lr'?"),
    ("optim.name=rmsprop", "optim.name: 'rmsprop' is not valid; valid: sgd, adamw, adam"),
    ("data.batch_size=abc", "data.batch_size: expected an integer"),
    ("train.amp=fp8", "valid: none, bf16, fp16"),
    ("data.batch_size=0", "data.batch_size must be at least 1"),
    ("schedule.name=multistep", "schedule.milestones: the multistep schedule needs epochs"),
    ("optim", "expected KEY=VALUE"),
    ("name=a/b", "one folder name"),
])
def test_bad_values_name_the_valid_choices(override, message):
    with pytest.raises(UserError, match=None) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["optim.lr=0.2", "paper.top1=95.0", "model.kwargs.depth=56"])
    save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert config_to_dict(again) == config_to_dict(cfg)


def test_unknown_recipe_lists_bundled_ones():
    with pytest.raises(UserError, match="neither a file nor a bundled recipe"):
        load_config("no_such_recipe")


def test_recipe_file_must_be_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(str(bad))
    bad.write_text("model: {name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(bad))


def test_every_bundled_recipe_validates():
    for name in recipe_names():
        cfg = load_config(name)
        assert cfg.model.name and cfg.paper, name


def test_parse_override_nests():
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
