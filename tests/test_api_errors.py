"""The Python API refuses bad arguments with one UserError naming what is expected, never a torch
internals message: create_model's shared options and every block's channels and input shape."""
import re

import pytest
import torch

import attnzoo
from attnzoo.errors import UserError
from attnzoo.layers import (
    LESA,
    LSAS,
    SAM,
    SE,
    BNSqueezeExcite,
    InterventionalClassifier,
    ShiftBalance,
    create_block,
)


@pytest.mark.parametrize("name, kwargs, facts", [
    # the name: missing, of another type, empty
    (None, {}, ("model name", "None")),
    (3, {}, ("model name", "3")),
    ("", {}, ("model name", "''")),
    # a shared option: out of range, of another type
    ("resnet20_cifar", {"num_classes": -3}, ("num_classes", "at least 0", "-3")),
    ("resnet20_cifar", {"num_classes": "abc"}, ("num_classes", "integer", "'abc'")),
    ("resnet20_cifar", {"num_classes": 2.5}, ("num_classes", "integer", "2.5")),
    ("resnet20_cifar", {"in_chans": 0}, ("in_chans", "at least 1", "0")),
    ("lesa_resnet50", {"img_size": 0}, ("img_size", "at least 1", "pair")),
    ("lesa_resnet50", {"img_size": "big"}, ("img_size", "integer", "'big'")),
    ("resnet20_cifar", {"drop_rate": 2}, ("drop_rate", "[0.0, 1.0)", "2")),
    # a model's own option: unknown, of another type, out of its values
    ("resnet20_cifar", {"no_such_option": 1}, ("resnet20_cifar", "no_such_option")),
    ("resnet_cifar", {"depth": "20"}, ("depth", "integer", "'20'", "str")),
    ("resnet_cifar", {"depth": 20.0}, ("depth", "integer", "float")),
    ("senet_cifar", {"depth": True}, ("depth", "integer", "bool")),
    ("resnet_cifar", {"depth": 21}, ("depth 21", "6n+2")),
    ("resnet_cifar", {"block": "wide"}, ("wide", "basic, bottleneck")),
    # a 'host+block' name with an unknown part
    ("resnet18+nope", {}, ("nope", "lsas_se")),
    ("resnet_cifar+", {}, ("resnet_cifar+", "lsas_se")),
])
def test_create_model_arguments(name, kwargs, facts):
    with pytest.raises(UserError) as err:
        attnzoo.create_model(name, **kwargs)
    message = str(err.value)
    assert all(f in message for f in facts) and "\n" not in message, message


BLOCKS = {  # name -> (constructor for `channels`, channels it is built for)
    "SE": (SE, 16), "LSAS": (LSAS, 16), "Shift-and-Balance": (ShiftBalance, 16),
    "SE (BatchNorm)": (BNSqueezeExcite, 16),
    "LESA": (lambda c: LESA(c, fmap_size=4, groups=2), 16),
    "SAM": (lambda c: SAM(0, c, 2, 16, 8), 16),
}


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("channels", [0, -4, 2.5])
def test_a_block_refuses_channels_that_are_not_positive_integers(block, channels):
    build, _ = BLOCKS[block]
    with pytest.raises(UserError) as err:
        build(channels)
    assert re.match(rf"^{re.escape(block)}: \w+ ", str(err.value)), str(err.value)
    assert "positive integer" in str(err.value) and str(channels) in str(err.value)


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("shape", [(2, 8, 4, 4), (2, 16, 4)])
def test_a_block_refuses_an_input_of_other_channels_or_dimensions(block, shape):
    build, channels = BLOCKS[block]
    with pytest.raises(UserError) as err:
        build(channels)(torch.zeros(shape))
    assert str(err.value).startswith(block)
    assert f"(N, {channels}, H, W)" in str(err.value) and str(list(shape)) in str(err.value)


def test_the_block_factory_and_the_ida_head_check_channels_too():
    with pytest.raises(UserError, match=r"'eca'.*channels.*positive integer.*-4"):
        create_block("eca", -4)
    with pytest.raises(UserError, match=r"IDA head.*in_features.*positive integer.*0"):
        InterventionalClassifier(0, 3)
    with pytest.raises(UserError, match=r"IDA head.*\(N, 8, H, W\)"):
        InterventionalClassifier(8, 3, num_heads=2)(torch.zeros(2, 8, 4))
