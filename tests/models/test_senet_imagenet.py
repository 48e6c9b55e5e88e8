"""SENet / LSAS-SENet ResNets for ImageNet as in the LSAS seed's imagenet/ files."""
import pytest
import timm
import torch

import attnzoo
from attnzoo.errors import UserError
from attnzoo.models import senet_imagenet  # noqa: F401  (registers the networks)

DEPTHS = (18, 34, 50, 101, 152)


def test_names_are_registered_and_do_not_collide_with_timm():
    for d in DEPTHS:
        for name in (f"senet_resnet{d}", f"lsas_senet_resnet{d}"):
            assert name in attnzoo.list_models() and timm.is_model(name)


@pytest.mark.parametrize("name,params", [("senet_resnet18", 11_778_592), ("lsas_senet_resnet18", 11_776_136),
                                         ("lsas_senet_resnet50", 27_953_960)])
def test_parameter_counts_equal_the_official_code(name, params):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        m = attnzoo.create_model(name)
    assert sum(p.numel() for p in m.parameters()) == params


def test_attention_placement():
    se = attnzoo.create_model("senet_resnet18", num_classes=10)
    assert all(type(b.attn).__name__ == "SE" for s in (se.layer1, se.layer4) for b in s)
    assert se.layer1[0].attn.fc1.out_features == 4    # 64 // 16
    ls = attnzoo.create_model("lsas_senet_resnet18", num_classes=10)
    kinds = [type(s[0].attn).__name__ for s in (ls.layer1, ls.layer2, ls.layer3, ls.layer4)]
    assert kinds == ["Identity", "Identity", "LSAS", "LSAS"]


def test_forward_interface_at_low_resolution():
    m = attnzoo.create_model("lsas_senet_resnet18", num_classes=5, order=2).eval()
    x = torch.randn(1, 3, 64, 64)
    f = m.forward_features(x)
    assert f.shape == (1, 512, 2, 2) and m(x).shape == (1, 5)
    assert m.layer4[0].attn.order == 2
    m.reset_classifier(0)
    assert m(x).shape == (1, 512)


def test_other_blocks_and_errors():
    m = attnzoo.create_model("senet_resnet18", attn="eca", num_classes=3)
    assert type(m.layer2[0].attn).__name__ == "EcaModule"
    with pytest.raises(UserError, match="depth 20.*18, 34, 50, 101, 152"):
        senet_imagenet.AttnResNet(depth=20)
    with pytest.raises(UserError, match="1, 2, 3, 4"):
        senet_imagenet.AttnResNet(depth=18, attn="se", attn_stages=(5,))
