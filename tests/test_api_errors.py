"""The Python API refuses bad arguments with one UserError naming what is expected, never a torch
internals message: create_model's shared options and every block's channels and input shape."""
import re

import pytest
import torch

import attnzoo
from attnzoo.errors import UserError
from attnzoo.layers import LESA, LSAS, SAM, SE, BNSqueezeExcite, InterventionalClassifier, ShiftBalance, create_block


@pytest.mark.parametrize("name, kwargs, expected", [
    (None, {}, "a model name is a non-empty string, got None"),
    (3, {}, "a model name is a non-empty string, got 3"),
    ("", {}, "a model name is a non-empty string, got ''"),
    ("resnet20_cifar", {"num_classes": -3}, "num_classes must be an integer of at least 0, got -3"),
    ("resnet20_cifar", {"num_classes": "abc"}, "num_classes must be an integer of at least 0, got 'abc'"),
    ("resnet20_cifar", {"num_classes": 2.5}, "num_classes must be an integer"),
    ("resnet20_cifar", {"in_chans": 0}, "in_chans must be an integer of at least 1"),
    ("lesa_resnet50", {"img_size": 0}, "img_size must be an integer of at least 1 (or a pair of them), got 0"),
    ("lesa_resnet50", {"img_size": "big"}, "img_size must be an integer of at least 1"),
    ("resnet20_cifar", {"drop_rate": 2}, "drop_rate must be a number in [0.0, 1.0), got 2"),
    ("resnet20_cifar", {"no_such_option": 1}, "model 'resnet20_cifar':"),
])
def test_create_model_arguments(name, kwargs, expected):
    with pytest.raises(UserError) as err:
        attnzoo.create_model(name, **kwargs)
    assert expected in str(err.value)


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
    with pytest.raises(UserError, match=rf"^{re.escape(block)}: \w+ must be a positive integer, got {channels}"):
        build(channels)


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("shape", [(2, 8, 4, 4), (2, 16, 4)])
def test_a_block_refuses_an_input_of_other_channels_or_dimensions(block, shape):
    build, channels = BLOCKS[block]
    with pytest.raises(UserError) as err:
        build(channels)(torch.zeros(shape))
    assert str(err.value) == f"{block} expects a feature map (N, {channels}, H, W), got shape {list(shape)}"


def test_the_block_factory_and_the_ida_head_check_channels_too():
    with pytest.raises(UserError, match="attention block 'eca': channels must be a positive integer, got -4"):
        create_block("eca", -4)
    with pytest.raises(UserError, match="IDA head: in_features must be a positive integer, got 0"):
        InterventionalClassifier(0, 3)
    with pytest.raises(UserError, match=r"IDA head expects a feature map \(N, 8, H, W\)"):
        InterventionalClassifier(8, 3, num_heads=2)(torch.zeros(2, 8, 4))
