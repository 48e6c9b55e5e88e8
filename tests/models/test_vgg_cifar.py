"""VGG-16 for CIFAR as in the Shift-and-Balance seed."""
import pytest
import timm
import torch

import attnzoo
from attnzoo.errors import UserError
from attnzoo.layers.shift_balance import BNSqueezeExcite, ShiftBalance
from attnzoo.models import vgg_cifar  # noqa: F401  (registers the networks)


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_names_and_official_parameter_counts():
    for name, params in (("vgg16_cifar", 7_774_538), ("se_vgg16_cifar", 8_127_018),
                         ("sb_vgg16_cifar", 8_127_978)):
        assert name in attnzoo.list_models() and timm.is_model(name)
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            assert count(attnzoo.create_model(name)) == params


def test_attention_after_each_stage_with_options():
    m = attnzoo.create_model("sb_vgg16_cifar", activation="softmax", rd_ratio=0.25)
    assert all(isinstance(a, ShiftBalance) for a in m.attns)
    assert m.attns[3].fc1.out_features == 128 and type(m.attns[0].act).__name__ == "Softmax"
    with pytest.warns(FutureWarning, match="use rd_ratio=0.25"):  # the old name, as old recipes give it
        assert attnzoo.create_model("sb_vgg16_cifar", ratio=0.25).attns[3].fc1.out_features == 128
    assert all(isinstance(a, BNSqueezeExcite) for a in attnzoo.create_model("se_vgg16_cifar").attns)
    assert all(isinstance(a, torch.nn.Identity) for a in attnzoo.create_model("vgg16_cifar").attns)


def test_batch_size_one_and_interface():
    m = attnzoo.create_model("sb_vgg16_cifar", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    assert m.forward_features(x).shape == (1, 512, 2, 2)
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (1, 256)
    assert m(x).shape == (1, 4)
    m.reset_classifier(7)
    assert m.get_classifier().out_features == 7 and m(x).shape == (1, 7)


def test_seed_init_and_other_blocks():
    m = attnzoo.create_model("vgg16_cifar")
    assert m.fc.bias.abs().max() == 0 and m.fc.weight.std() < 0.05
    m = attnzoo.create_model("vgg16_cifar", attn="lsas_se", attn_kwargs={"order": 2})
    assert m.attns[1].order == 2


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown activation 'swish'"):
        attnzoo.create_model("sb_vgg16_cifar", activation="swish")
    with pytest.raises(UserError, match="leaves 0 hidden channels"):
        attnzoo.create_model("sb_vgg16_cifar", rd_ratio=0.001)
