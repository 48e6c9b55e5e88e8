"""Every numeric config key is range-checked in one table, every list element type-checked, and
numbers in scientific notation are numbers: all refused with one UserError naming what is valid."""
import dataclasses
import typing

import pytest

from attnzoo.engine.config import RANGES, Config, load_config
from attnzoo.errors import UserError


def _numeric_keys():
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(hints[section.name]):
            continue
        for key, tp in typing.get_type_hints(hints[section.name]).items():
            parts = {tp, *typing.get_args(tp)} | {a for t in typing.get_args(tp) for a in typing.get_args(t)}
            if parts & {int, float} and bool not in parts:
                yield f"{section.name}.{key}", tp


def test_every_numeric_key_has_a_range():
    assert {key for key, _ in _numeric_keys()} == set(RANGES)


def _outside(valid):
    """Values just outside a range (and for integer keys whole numbers only)."""
    if valid.low is not None:
        yield valid.low if valid.low_open else valid.low - 1
    if valid.high is not None:
        yield valid.high if valid.high_open else valid.high + 1


def _as_override(key, value):
    return f"{key}=[{value}, 0.5]" if key == "optim.betas" else (
        f"{key}=[{value}]" if key == "schedule.milestones" else f"{key}={value}")


OUTSIDE = [(key, v) for key, valid in RANGES.items() for v in _outside(valid)]


@pytest.mark.parametrize("key, value", OUTSIDE, ids=[f"{k}={v}" for k, v in OUTSIDE])
def test_a_number_outside_its_range_is_refused_naming_the_range(key, value):
    with pytest.raises(UserError, match=rf"^{key} must be (at least|greater than|in) "):
        load_config(None, [_as_override(key, value), "schedule.name=multistep", "schedule.milestones=[3]"]
                    if key != "schedule.milestones" else [_as_override(key, value)])


@pytest.mark.parametrize("override, facts", [
    ("optim.lr=.nan", ("optim.lr", "finite", "nan")),
    ("optim.lr=.inf", ("optim.lr", "finite", "inf")),
    ("optim.betas=[0.9]", ("optim.betas", "2 values")),
    ("optim.betas=[0.9, 0.9, 0.9]", ("optim.betas", "2 values")),
    ("optim.betas=[0.9, fast]", ("optim.betas[1]", "number", "'fast'")),
    ("optim.betas=0.9", ("optim.betas", "list")),
    ("schedule.milestones=[30, 2.5]", ("schedule.milestones[1]", "integer", "2.5")),
    ("schedule.milestones=[30, true]", ("schedule.milestones[1]", "integer", "True")),
    ("schedule.milestones=[60, 30]", ("schedule.milestones", "increasing")),
    ("schedule.milestones=[30, 30]", ("schedule.milestones", "increasing")),
    ("train.seed=18446744073709551616", ("train.seed", "[0, 18446744073709551615]")),
    ("optim.momentum=0", None),  # valid alone, refused with nesterov below
    ("data.name=cifar11", ("cifar11", "cifar10")),
    ("train.deterministic=maybe", ("train.deterministic", "true or false", "maybe")),
    ("model.kwargs=[1, 2]", ("model.kwargs", "mapping")),
    ("model=resnet18", ("model", "mapping", "name")),
    ("data.root=[a]", ("data.root", "string")),
])
def test_list_elements_finite_numbers_and_cross_checks(override, facts):
    if facts is None:
        load_config(None, [override])
        with pytest.raises(UserError, match="optim.nesterov.*optim.momentum"):
            load_config(None, [override, "optim.nesterov=true"])
        return
    with pytest.raises(UserError) as err:
        load_config(None, [override, "data.options.num_train=8"])
    message = str(err.value)
    assert all(f in message for f in facts) and "\n" not in message, message


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1E6", 1e6), ("-2.5e-3", -2.5e-3),
                                         ("1.0e-4", 1e-4), ("3", 3), ("0.1", 0.1)])
def test_scientific_notation_is_a_number_in_overrides_and_recipes(tmp_path, text, value):
    assert load_config(None, [f"schedule.min_lr={text}" if value >= 0 else f"paper.x={text}"]) is not None
    assert load_config(None, [f"paper.x={text}"]).paper["x"] == value
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"optim: {{weight_decay: {text}}}\n" if value >= 0 else f"paper: {{x: {text}}}\n")
    cfg = load_config(str(recipe))
    assert (cfg.optim.weight_decay if value >= 0 else cfg.paper["x"]) == value


def test_scientific_notation_leaves_other_strings_alone():
    cfg = load_config(None, ["paper.a=e5", "paper.b=5e", "paper.c=v1e3", "paper.d=1_000"])
    assert cfg.paper == {"a": "e5", "b": "5e", "c": "v1e3", "d": 1000}


@pytest.mark.parametrize("text, message", [
    ("a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\npaper: {x: *b}\n", "aliases (*name) are not accepted"),
    ("paper: " + "[" * 5000 + "]" * 5000 + "\n", "RecursionError"),
])
def test_hostile_recipes_are_refused_in_one_line(tmp_path, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError, match="r.yaml.*YAML") as err:
        load_config(str(recipe))
    assert message in str(err.value) and "\n" not in str(err.value).replace("\\n", "")
