"""SAN10/15/19 networks: parameter counts of the seed's table, interface, timm registration,
official key names."""
import pytest
import timm
import torch

from attnzoo.errors import UserError
from attnzoo.models import san

SEED_PARAMS_M = {"san10_pairwise": 10.5, "san10_patchwise": 11.8, "san15_pairwise": 14.1,
                 "san15_patchwise": 16.2, "san19_pairwise": 17.6, "san19_patchwise": 20.5}
EXACT = {"san10_pairwise": 10_531_848, "san10_patchwise": 11_841_124}  # counted on the official model


@pytest.mark.parametrize("name", SEED_PARAMS_M)
def test_parameter_counts_match_the_seed(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = getattr(san, name)()
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == SEED_PARAMS_M[name]
    if name in EXACT:
        assert n == EXACT[name]


def _tiny(sa_type, **kw):
    return san.SAN(sa_type, layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3), num_classes=5, **kw)


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_interface_and_training_step(sa_type):
    model = _tiny(sa_type)
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 2048, 2, 2) and model.num_features == 2048
    assert model.forward_head(feats, pre_logits=True).shape == (2, 2048)
    logits = model(x)
    assert logits.shape == (2, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model(x).shape == (2, 3)


def test_registered_in_timm_without_collisions():
    from timm.models._registry import _model_entrypoints

    assert set(SEED_PARAMS_M) <= set(timm.list_models("san*"))
    assert all(_model_entrypoints[n].__module__ == "attnzoo.models.san" for n in SEED_PARAMS_M)
    # and timm defines no model of these names that ours would shadow
    from pathlib import Path

    timm_sources = "".join(p.read_text(errors="ignore") for p in Path(timm.models.__file__).parent.glob("*.py"))
    assert not any(f"def {n}(" in timm_sources for n in SEED_PARAMS_M)
    model = timm.create_model("san10_pairwise", num_classes=7, backend="torch")
    assert model.fc.out_features == 7 and model.layer1[0].sam.backend == "torch"


def test_keys_follow_the_official_names():
    keys = set(_tiny("pairwise").state_dict())
    for key in ("conv_in.weight", "bn_in.running_mean", "conv0.weight", "layer0.0.sam.conv_w.5.bias",
                "layer4.0.sam.conv_p.weight", "layer2.0.bn2.weight", "layer3.0.conv.bias", "fc.weight"):
        assert key in keys


def test_bad_configuration():
    with pytest.raises(UserError, match="5 positive entries"):
        san.SAN("pairwise", layers=(1, 1, 1, 1), num_classes=5)
    with pytest.raises(UserError, match="valid: pairwise, patchwise"):
        san.SAN("pairwize")
