"""The block factory knows the channel-attention blocks and rejects unknown names clearly."""
import pytest
import torch

from attnzoo.errors import UserError
from attnzoo.layers.factory import block_names, create_block
from attnzoo.layers.lsas import LSAS
from attnzoo.layers.se import SE
from attnzoo.layers.shift_balance import BNSqueezeExcite, ShiftBalance


@pytest.mark.parametrize("name,cls", [("se", SE), ("lsas_se", LSAS), ("lsas_eca", LSAS),
                                      ("lsas_cbam", LSAS), ("sb", ShiftBalance), ("se_bn", BNSqueezeExcite)])
def test_channel_blocks_are_registered(name, cls):
    assert name in block_names()
    block = create_block(name, 32).eval()
    assert isinstance(block, cls)
    x = torch.randn(1, 32, 4, 4)
    assert block(x).shape == x.shape


def test_lsas_options_pass_through():
    block = create_block("lsas_eca", 64, order=4, kernel_size=5)
    assert block.order == 4 and block.kind == "eca"


def test_unknown_names_and_options_are_user_errors():
    with pytest.raises(UserError, match="'lsas_sse'.*lsas_se"):
        create_block("lsas_sse", 32)
    with pytest.raises(UserError, match="LSAS order.*0 to 5.*9"):
        create_block("lsas_se", 32, order=9)
    with pytest.raises(UserError, match="attention block 'sb'"):
        create_block("sb", 32, bogus=1)


@pytest.mark.parametrize("name", block_names())
def test_get_attn_builds_every_block_for_any_channel_count(name):
    from attnzoo.layers import get_attn

    # lesa needs its feature-map size; timm 1.0.31's GatherExcite fails with its default MLP
    # (ConvMlp gets act_layer twice), a timm bug, so 'ge' is built without it
    kwargs = {"lesa": {"fmap_size": 4}, "ge": {"use_mlp": False}}.get(name, {})
    make = get_attn(name, **kwargs)
    torch.manual_seed(0)
    block = make(32).eval()
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        assert block(x).shape == x.shape
    wide = make(64, dtype=torch.float64)  # timm passes device and dtype to its attn_layer
    assert all(p.dtype == torch.float64 for p in wide.parameters())


def test_get_attn_none_and_unknown_names():
    from attnzoo.layers import get_attn

    assert get_attn(None) is None and get_attn("none") is None and get_attn("") is None
    with pytest.raises(UserError, match="'sbb'.*sb"):
        get_attn("sbb")
    with pytest.raises(UserError, match="attention block 'lesa'"):
        get_attn("lesa", bogus=1)(32)
