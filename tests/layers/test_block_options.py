"""A block's options are checked before it is built, by name and by value, in one place (the
block factory), for every route a user gives them: `create_block`, `get_attn`, `add_attention`
and a network's `attn_kwargs`. Each mistake is one UserError line naming the block, the option,
the bad value and what is valid."""
import inspect

import pytest
import torch
import torchvision.models.resnet as tv_resnet

import attnzoo
from attnzoo.errors import UserError
from attnzoo.layers.factory import PASSED_ON, block_names, check_options, create_block, get_attn, get_block
from attnzoo.layers.options import block_options

MISTAKES = [  # (block, options, what the message names besides the block)
    ("se", dict(rd_ratio="abc"), ("rd_ratio", "'abc'", "a positive number")),
    ("se", dict(rd_ratio=-0.5), ("rd_ratio", "-0.5", "a positive number")),
    ("se", dict(rd_ratio=float("nan")), ("rd_ratio", "nan", "a positive number")),
    ("se_bn", dict(rd_ratio="abc"), ("rd_ratio", "'abc'", "a positive number")),
    ("sb", dict(rd_channels=0), ("rd_channels", "0", "a positive integer")),
    ("se", dict(rd_channels=2.5), ("rd_channels", "2.5", "a positive integer")),
    ("se", dict(rdratio=0.25), ("unknown option 'rdratio'", "did you mean rd_ratio", "valid: rd_channels")),
    ("ese", dict(bogus=1), ("unknown option 'bogus'", "valid: add_maxpool, gate_layer")),  # ese takes **_
    ("lsas_se", dict(order="2"), ("order", "'2'", "an integer")),
    ("lsas_se", dict(order=True), ("order", "True", "an integer")),
    ("lsas_se", dict(w_init="a"), ("w_init", "'a'", "a number")),
    ("lsas_cbam", dict(rd_ratio="x"), ("rd_ratio", "'x'", "a positive number")),  # the base gate's option
    ("lsas_cbam", dict(spatial_kernel_size=4), ("spatial_kernel_size", "4", "a positive odd integer")),
    ("lsas_eca", dict(attn="se"), ("unknown option 'attn'",)),  # the name fixes the base gate
    ("eca", dict(kernel_size=-3), ("kernel_size", "-3", "a positive odd integer")),
    ("eca", dict(gamma="a"), ("gamma", "'a'", "a number")),
    ("cbam", dict(spatial_kernel_size=0), ("spatial_kernel_size", "0", "a positive odd integer")),
    ("cbam", dict(gate_layer="nosuch"), ("gate_layer", "'nosuch'", "an activation name", "sigmoid")),
    ("gc", dict(act_layer=5), ("act_layer", "5", "a layer class")),
    ("ese", dict(add_maxpool="yes"), ("add_maxpool", "'yes'", "true or false")),
    ("coord", dict(rd_divisor=0), ("rd_divisor", "0", "a positive integer")),
    ("ge", dict(extent=3), ("extent", "3", "0 (global) or an even positive integer")),
    ("lesa", dict(fmap_size=-4), ("fmap_size", "-4", "a positive integer or a pair")),
    ("lesa", dict(fmap_size="a"), ("fmap_size", "'a'", "a positive integer or a pair")),
    ("lesa", dict(fmap_size=[6, 6, 6]), ("fmap_size", "[6, 6, 6]", "a positive integer or a pair")),
    ("lesa", dict(fmap_size=6, groups=0), ("groups", "0", "a positive integer")),
    ("se_bn", dict(init_std=-1), ("init_std", "-1", "a number >= 0")),
    ("sb", dict(activation=3), ("activation", "3", "a string")),
]


def _says(err, block, facts):
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"attention block '{block}': "), message
    assert all(f in message for f in facts), message


@pytest.mark.parametrize("block, options, facts", MISTAKES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_option_is_one_line_naming_block_option_value_and_what_is_valid(block, options, facts):
    for build in (lambda: create_block(block, 16, **options), lambda: get_attn(block, **options)):
        with pytest.raises(UserError) as err:  # get_attn: at once, before a network is built
            build()
        _says(err, block, facts)


def test_the_network_and_add_attention_routes():
    with torch.device("meta"):
        with pytest.raises(UserError) as err:
            attnzoo.create_model("resnet20_cifar", attn="se", attn_kwargs=dict(rd_ratio="abc"))
        _says(err, "se", ("rd_ratio", "'abc'", "a positive number"))
        with pytest.raises(UserError) as err:
            attnzoo.create_model("lsas_senet_cifar", depth=11, attn_kwargs=dict(order=1.5))
        _says(err, "lsas_se", ("order", "1.5", "an integer"))
        host = tv_resnet.resnet18()
    before = {k: v.shape for k, v in host.state_dict().items()}
    with pytest.raises(UserError) as err:
        attnzoo.add_attention(host, "cbam", spatial_kernel_size=4)
    _says(err, "cbam", ("spatial_kernel_size", "4", "a positive odd integer"))
    assert {k: v.shape for k, v in host.state_dict().items()} == before  # refused before any change


def test_options_without_a_block_are_refused_not_dropped():
    with pytest.raises(UserError, match="options order are given but no block \\(attn=None\\); name one: "):
        get_attn(None, order=2)
    with pytest.raises(UserError, match="options rd_ratio are given but no block"):
        attnzoo.create_model("resnet20_cifar", attn_kwargs=dict(rd_ratio=0.5))
    assert get_attn("none") is None


@pytest.mark.parametrize("name", block_names())
def test_every_option_default_passes_the_check(name):
    """The rules agree with each constructor: its own defaults are valid values."""
    options = block_options(get_block(name), PASSED_ON.get(name))
    assert options
    defaults = {k: p.default for k, p in options.items() if p.default is not inspect.Parameter.empty}
    check_options(name, defaults)


def test_valid_values_of_each_kind_pass():
    for name, options in [("se", dict(rd_ratio=1, rd_channels=None, rd_divisor=8)),
                          ("lsas_cbam", dict(order=3, rd_ratio=0.25, spatial_kernel_size=3, b_init=-1)),
                          ("cbam", dict(gate_layer="hard_sigmoid", act_layer=torch.nn.GELU, mlp_bias=True)),
                          ("lesa", dict(fmap_size=(4, 6), groups=2, stride=2)), ("ge", dict(extent=4))]:
        check_options(name, options)
