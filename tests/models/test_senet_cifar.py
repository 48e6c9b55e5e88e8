"""SENet / LSAS-SENet for CIFAR: where the attention sits, sizes, options and errors."""
import pytest
import timm
import torch

import attnzoo
from attnzoo.errors import UserError
from attnzoo.layers.lsas import LSAS
from attnzoo.layers.se import SE
from attnzoo.models import senet_cifar  # noqa: F401  (registers the networks)

NAMES = ["senet_cifar", "lsas_senet_cifar", "lsas_senet_allstages_cifar", "senet164_cifar",
         "lsas_senet164_cifar", "lsas_senet164_allstages_cifar"]


def attn_kinds(model):
    return [[type(b.attn).__name__ for b in stage] for stage in (model.layer1, model.layer2, model.layer3)]


def test_names_are_registered_and_do_not_collide_with_timm():
    for name in NAMES:
        assert name in attnzoo.list_models() and timm.is_model(name)


def test_senet_has_se_everywhere_and_lsas_only_in_stage_3():
    se = attnzoo.create_model("senet_cifar", depth=29)
    assert attn_kinds(se) == [["SE"] * 3] * 3
    ls = attnzoo.create_model("lsas_senet_cifar", depth=29)
    assert attn_kinds(ls) == [["Identity"] * 3, ["Identity"] * 3, ["LSAS"] * 3]
    assert all(b.attn.order == 1 for b in ls.layer3)
    every = attnzoo.create_model("lsas_senet_allstages_cifar", depth=29, order=2)
    assert attn_kinds(every) == [["LSAS"] * 3] * 3 and every.layer1[0].attn.order == 2


def test_se_width_follows_the_seed():
    m = attnzoo.create_model("senet_cifar", depth=11)
    assert [s[0].attn.fc1.out_features for s in (m.layer1, m.layer2, m.layer3)] == [4, 8, 16]


def test_seed_parameter_counts():
    # counted on the official code (benchmarks/faithfulness_channel.py); meta: shapes only
    with torch.device("meta"):
        senet = attnzoo.create_model("senet_cifar", depth=47, num_classes=100)
        lsas = attnzoo.create_model("lsas_senet_cifar", depth=29, num_classes=100, order=3)
    assert sum(p.numel() for p in senet.parameters()) == 577_856
    assert sum(p.numel() for p in lsas.parameters()) == 366_244


def test_forward_and_module_interface():
    m = attnzoo.create_model("lsas_senet_cifar", depth=11, num_classes=7).eval()
    x = torch.randn(1, 3, 32, 32)
    f = m.forward_features(x)
    assert f.shape == (1, 256, 8, 8)
    assert m.forward_head(f, pre_logits=True).shape == (1, 256)
    assert m(x).shape == (1, 7)
    m.reset_classifier(3)
    assert m(torch.randn(2, 3, 96, 96)).shape == (2, 3)   # STL-10 size


def test_basic_block_variant_gets_the_slot_too():
    m = attnzoo.create_model("senet_cifar", depth=8, block="basic")
    assert isinstance(m.layer1[0].attn, SE) and m.layer3[0].attn.fc1.out_features == 4


def test_any_backbone_takes_any_block():
    m = attnzoo.create_model("resnet164_cifar", attn="lsas_eca", attn_kwargs={"order": 2})
    assert isinstance(m.layer2[5].attn, LSAS) and m.layer2[5].attn.kind == "eca"
    m = attnzoo.create_model("lsas_senet_cifar", depth=11, attn="lsas_cbam", order=4)
    assert m.layer3[0].attn.kind == "cbam" and m.layer3[0].attn.order == 4


def test_bad_depth_and_order_are_user_errors():
    with pytest.raises(UserError, match="depth 30.*bottleneck.*9n\\+2"):
        attnzoo.create_model("senet_cifar", depth=30)
    with pytest.raises(UserError, match="depth 29.*basic.*6n\\+2"):
        attnzoo.create_model("lsas_senet_cifar", depth=29, block="basic")
    with pytest.raises(UserError, match="LSAS order.*0 to 5.*6"):
        attnzoo.create_model("lsas_senet_cifar", depth=11, order=6)
