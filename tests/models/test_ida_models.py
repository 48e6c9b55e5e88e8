"""IDA networks: registration, any backbone, local weights, freezing."""
import pytest
import torch
import torchvision
from safetensors.torch import save_file

import attnzoo
from attnzoo.errors import UserError
from attnzoo.layers.intervention import InterventionalClassifier
from attnzoo.models import ida as ida_models  # noqa: F401  (registers the IDA networks)

NAMES = ("ida", "ida_resnet50", "ida_resnet101", "ida_resnet101_light", "ida_resnet101_official",
         "mlc_baseline")


def test_registered_in_timm_as_attnzoo_entrypoints():
    import timm

    for name in NAMES:
        assert name in attnzoo.list_models()
        assert timm.models.model_entrypoint(name).__module__ == "attnzoo.models.ida"


def test_ida_on_a_timm_backbone():
    model = attnzoo.create_model("ida", backbone="resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 512, 2, 2) and model.num_features == 512
    assert model(x).shape == (2, 5)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 512)  # pooled, as after reset_classifier(0)
    assert model.head(feats, pre_logits=True).shape == (2, 5, 512)  # the IDA head's class features
    assert model.attention_maps(x).shape == (2, 4, 5, 2, 2)
    assert isinstance(model.get_classifier(), InterventionalClassifier)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3


def test_ida_on_an_attnzoo_backbone_and_baseline():
    model = attnzoo.create_model("ida", backbone="resnet20_cifar", num_classes=4, heavy=False)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    base = attnzoo.create_model("mlc_baseline", backbone="resnet18", num_classes=4).eval()
    assert isinstance(base.get_classifier(), torch.nn.Linear)
    assert base(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert base.forward_head(base.forward_features(torch.randn(1, 3, 32, 32)), pre_logits=True).shape == (1, 512)


def test_paper_networks_configuration():
    model = attnzoo.create_model("ida_resnet101_official", num_classes=80)
    head = model.get_classifier()
    assert model.backbone_name == "resnet101" and head.num_heads == 4 and head.heavy
    assert head.logit_norm == "last_head" and head.token_layout == "interleaved"
    light = attnzoo.create_model("ida_resnet101_light", num_classes=20).get_classifier()
    assert not light.heavy and light.logit_norm == "per_head"


@pytest.mark.parametrize("fmt", ["torchvision", "timm_safetensors"])
def test_backbone_weights_from_a_local_file(tmp_path, fmt):
    if fmt == "torchvision":
        state = torchvision.models.resnet18(weights=None).state_dict()  # with its fc classifier
        path = tmp_path / "resnet18.pth"
        torch.save({"state_dict": state}, path)
    else:
        import timm

        state = timm.create_model("resnet18", num_classes=1000).state_dict()
        path = tmp_path / "resnet18.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = attnzoo.create_model("ida", backbone="resnet18", num_classes=3, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def _local(path):
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_whole_network_weights_from_a_local_file(tmp_path):
    source = attnzoo.create_model("ida", backbone="resnet18", num_classes=80)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "ida.safetensors"))
    model = attnzoo.create_model("ida", backbone="resnet18", num_classes=80, **_local(tmp_path / "ida.safetensors"))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        attnzoo.create_model("ida", backbone="resnet18", **_local(tmp_path / "none.pth"))
    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(UserError, match="'resnet18'.*unexpected keys"):
        attnzoo.create_model("ida", backbone="resnet18", **_local(wrong))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="safely"):
        attnzoo.create_model("mlc_baseline", backbone="resnet18", **_local(junk))
    with pytest.raises(UserError, match="downloads no weights"):
        attnzoo.create_model("ida_resnet101", pretrained=True)
    with pytest.raises(UserError, match="unknown backbone 'resnet1o1'"):
        attnzoo.create_model("ida", backbone="resnet1o1")
    with pytest.raises(UserError, match="num_heads=3 must divide"):
        attnzoo.create_model("ida", backbone="resnet18", num_heads=3)


def test_freeze_backbone():
    model = attnzoo.create_model("ida", backbone="resnet18", num_classes=3,
                                 freeze_backbone=["conv1", "bn1", "layer1"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "backbone.conv1.weight" in frozen and "backbone.layer1.0.conv1.weight" in frozen
    assert not any(n.startswith(("backbone.layer2", "head")) for n in frozen)
    with pytest.raises(UserError, match="'layer9' names no parameter.*layer4"):
        attnzoo.create_model("ida", backbone="resnet18", freeze_backbone=["layer9"])
