"""Official LSAS / SB key names -> attnzoo networks (`attnzoo convert --from lsas-official|sb-official`).

The official state dicts are written here by hand from the official key layout (no official code
is needed): trunk keys as in torchvision/bearpaw, SE as fc1/fc2 (CIFAR) or se.fc.0/2 (ImageNet),
LSAS as w, b, w2, b2, ... of shape (1, C, 1, 1), SB's VGG16 as layerS.i.{0,1}, sbS.SB.*, sbS.lambd.
"""
import re

import pytest
import torch

import attnzoo
from attnzoo.convert import lsas as convert_lsas
from attnzoo.convert import sb as convert_sb
from attnzoo.models import senet_cifar, senet_imagenet, vgg_cifar  # noqa: F401
from attnzoo.weights import read_state_dict


def official_lsas_cifar(state):
    out = {}
    for k, v in state.items():
        k = k.replace(".attn.base.", ".").replace(".attn.", ".")
        if k.endswith(".sub_w") or k.endswith(".sub_b"):
            block, kind = k.rsplit(".", 1)[0], k[-1]
            for i, row in enumerate(v, 1):
                out[f"{block}.{kind}{'' if i == 1 else i}"] = row.reshape(1, -1, 1, 1).clone()
            continue
        out[k] = v
    return out


def official_lsas_imagenet(state):
    out = {}
    for k, v in state.items():
        k = re.sub(r"\.attn(\.base)?\.fc1\.", ".se.fc.0.", k)
        k = re.sub(r"\.attn(\.base)?\.fc2\.", ".se.fc.2.", k)
        if k.endswith(".attn.sub_w") or k.endswith(".attn.sub_b"):
            out[k.replace(".attn.sub_", ".se.")] = v.reshape(1, -1, 1, 1).clone()
            continue
        out[k] = v
    return out


def randomised(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


@pytest.mark.parametrize("name,kwargs,to_official", [
    ("lsas_senet_cifar", {"depth": 11, "order": 3}, official_lsas_cifar),
    ("lsas_senet_cifar", {"depth": 11, "order": 0}, official_lsas_cifar),
    ("senet_cifar", {"depth": 11}, official_lsas_cifar),
    ("lsas_senet_resnet18", {"num_classes": 4}, official_lsas_imagenet),
])
def test_lsas_official_keys_round_trip(tmp_path, name, kwargs, to_official):
    src = randomised(attnzoo.create_model(name, **kwargs))
    official = to_official(src.state_dict())
    assert not any(".attn." in k for k in official)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
    converted = convert_lsas.convert(read_state_dict(path), name)
    dst = attnzoo.create_model(name, **kwargs)
    dst.load_state_dict(converted, strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_lsas_broken_chain_is_refused_and_unknown_keys_pass_through():
    from attnzoo.errors import UserError

    state = {"layer3.0.w": torch.ones(1, 4, 1, 1), "layer3.0.w3": torch.ones(1, 4, 1, 1),
             "layer3.0.b": torch.ones(1, 4, 1, 1), "extra.thing": torch.zeros(1)}
    with pytest.raises(UserError, match="block layer3.0 has sub-attention w of orders \\[1, 3\\]"):
        convert_lsas.convert(state, "lsas_senet_cifar")
    assert "extra.thing" in convert_lsas.convert({"extra.thing": torch.zeros(1)}, "senet_cifar")


@pytest.mark.parametrize("name", ["vgg16_cifar", "se_vgg16_cifar", "sb_vgg16_cifar"])
def test_sb_official_keys_round_trip(name):
    src = randomised(attnzoo.create_model(name))
    mlp = {"fc1": "0", "bn1": "1", "fc2": "3", "bn2": "4"}
    official = {}
    for k, v in src.state_dict().items():
        m = re.match(r"stages\.(\d)\.(\d+)\.(.+)", k)
        if m:
            s, j = int(m[1]), int(m[2])
            k = f"layer{s + 1}.{j // 3}.{j % 3}.{m[3]}"
        m = re.match(r"attns\.(\d)\.(fc1|bn1|fc2|bn2)\.(.+)", k)
        if m:
            tag = "sb{}.SB" if name.startswith("sb") else "se{}.SE"
            k = f"{tag.format(int(m[1]) + 1)}.{mlp[m[2]]}.{m[3]}"
        k = re.sub(r"attns\.(\d)\.lam", lambda g: f"sb{int(g[1]) + 1}.lambd", k)
        if k.startswith("pre_logits.0."):
            k = "fc.0." + k[len("pre_logits.0."):]
        elif k.startswith("fc."):
            k = "fc.2." + k[len("fc."):]
        official[k] = v
    assert {"layer4.2.1.running_var", "fc.0.weight", "fc.2.weight", "fc.2.bias"} <= set(official)
    dst = attnzoo.create_model(name)
    dst.load_state_dict(convert_sb.convert(official, name), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(dst.eval()(x), src.eval()(x))
