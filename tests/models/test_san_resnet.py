"""The SAN table's ResNet-26/38/50: bottleneck ResNets at SAN10/15/19's stage depths."""
import pytest
import timm
import torch

import attnzoo
from attnzoo.errors import UserError
from attnzoo.models.senet_imagenet import AttnResNet


@pytest.mark.parametrize("name, params", [("san_resnet26", 13_696_552), ("san_resnet38", 19_626_792),
                                          ("san_resnet50", 25_557_032)])
def test_parameters_of_the_table(name, params):
    with torch.device("meta"):
        model = attnzoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params and model.pretrained_cfg["architecture"] == name
    assert name in attnzoo.list_models() and timm.is_model(name)


def test_stage_depths_and_no_attention():
    model = attnzoo.create_model("san_resnet38", num_classes=5)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 3, 5, 2]
    assert all(isinstance(b.attn, torch.nn.Identity) for i in range(1, 5) for b in getattr(model, f"layer{i}"))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_bad_stage_depths_are_a_user_error():
    with pytest.raises(UserError, match="four positive block counts"):
        AttnResNet(layers=(1, 2, 0, 1))
