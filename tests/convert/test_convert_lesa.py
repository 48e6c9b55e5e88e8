"""attnzoo convert --from lesa-official: the official derived buffers go, nothing else changes."""
import pytest
import torch

from attnzoo.convert.lesa import convert
from attnzoo.errors import UserError
from attnzoo.layers.lesa import LESA, relative_index
from attnzoo.models.lesa import lesa_resnet50


def _tiny():
    torch.manual_seed(0)
    return lesa_resnet50(layers=(1, 1, 2, 1), img_size=32, num_classes=5)


def test_convert_official_state_dict():
    m = _tiny()
    official = dict(m.state_dict())
    for name, mod in m.named_modules():
        if isinstance(mod, LESA):  # the official blocks carry their derived index as a buffer
            L = mod.fmap_size[0] * mod.fmap_size[1]
            official[f"{name}.flatten_index"] = relative_index(L).flatten()
    converted = convert(official, "lesa_resnet50")
    assert set(converted) == set(m.state_dict())
    _tiny().load_state_dict(converted, strict=True)
    official["layer4.0.conv2.flatten_index"] = torch.zeros(4, dtype=torch.long)
    with pytest.raises(UserError, match="flatten_index"):
        convert(official, "lesa_resnet50")
    with pytest.raises(UserError, match="lesa_resnet50, lesa_wrn50"):
        convert({}, "resnet50")
