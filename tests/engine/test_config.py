import pytest
import yaml

from attnzoo.engine.config import (
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    recipe_names,
    save_config,
)
from attnzoo.errors import UserError


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["optim.lr=0.05", "schedule.milestones=[81, 122]",
                             "model.kwargs.attn=se", "train.amp=bf16", "data.download=true"])
    assert cfg.optim.lr == 0.05
    assert cfg.schedule.milestones == [81, 122]
    assert cfg.model.kwargs == {"attn": "se"}
    assert cfg.train.amp == "bf16" and cfg.data.download is True


@pytest.mark.parametrize("override, facts", [
    ("optim.lrr=1", ("optim.lrr", "'lr'")),
    ("optim.name=rmsprop", ("optim.name", "rmsprop", "sgd, adamw, adam")),
    ("data.batch_size=abc", ("data.batch_size", "integer", "abc")),
    ("train.amp=fp8", ("train.amp", "fp8", "none, bf16, fp16")),
    ("train.loss=focal", ("train.loss", "focal", "auto, ce, bce, asl")),
    ("data.batch_size=0", ("data.batch_size", "at least 1")),
    ("schedule.name=multistep", ("schedule.milestones", "multistep")),
    ("optim", ("'optim'", "KEY=VALUE")),
    ("name=a/b", ("name 'a/b'", "folder name")),
    ("model.attn_kwargs.order=2", ("model.attn_kwargs", "model.attn", "host+block")),
    ("model.attn_stages=[2]", ("model.attn_stages", "model.attn", "host+block")),
])
def test_bad_values_name_the_valid_choices(override, facts):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert all(f in str(err.value) for f in facts), str(err.value)


def test_a_host_block_name_takes_the_block_options_but_not_a_second_block():
    cfg = load_config(None, ["model.name=resnet18+sb", "model.attn_kwargs.rd_ratio=0.25",
                             "model.attn_stages=[3, 4]", "model.attn_position=beside"])
    assert cfg.model.attn_kwargs == {"rd_ratio": 0.25} and cfg.model.attn_stages == [3, 4]
    with pytest.raises(UserError, match="resnet18\\+sb.*model.attn"):
        load_config(None, ["model.name=resnet18+sb", "model.attn=se"])


@pytest.mark.parametrize("overrides, facts", [
    (["model.attn=se", "model.attn_kwargs.rd_ratio=abc"], ("model.attn_kwargs", "'se'", "rd_ratio", "'abc'")),
    (["model.name=resnet18+lsas_eca", "model.attn_kwargs.kernel_size=4"], ("'lsas_eca'", "kernel_size", "odd")),
    (["model.name=resnet18+sb", "model.attn_kwargs.ratio_rd=2"], ("'sb'", "unknown option 'ratio_rd'", "rd_ratio")),
])
def test_block_options_are_checked_with_the_config(overrides, facts):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert all(f in str(err.value) for f in facts), str(err.value)


def test_the_loss_defaults_to_auto_and_a_named_one_is_kept():
    assert load_config(None).train.loss == "auto"
    assert load_config(None, ["train.loss=asl"]).train.loss == "asl"


def test_an_empty_mapping_empties_and_other_values_merge():
    cfg = load_config(None, ["data.options.num_train=8", "data.options.num_test=4", "data.options={}"])
    assert cfg.data.options == {}
    cfg = load_config(None, ["data.options.num_train=8", "data.options={num_test: 4}"])
    assert cfg.data.options == {"num_train": 8, "num_test": 4}
    cfg = load_config(None, ["model.kwargs={}", "model.kwargs.depth=8"])
    assert cfg.model.kwargs == {"depth": 8}


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["optim.lr=0.2", "paper.top1=95.0", "model.kwargs.depth=56"])
    save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert config_to_dict(again) == config_to_dict(cfg)


def test_unknown_recipe_lists_bundled_ones():
    with pytest.raises(UserError, match="no_such_recipe.*senet164_cifar10"):
        load_config("no_such_recipe")


def test_recipe_file_must_be_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="bad.yaml.*mapping"):
        load_config(str(bad))
    bad.write_text("model: {name: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml.*YAML"):
        load_config(str(bad))


def test_every_bundled_recipe_validates():
    for name in recipe_names():
        cfg = load_config(name)
        assert cfg.model.name and cfg.paper, name


def test_parse_override_nests():
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
