"""LESA-ResNet-50 / LESA-WRN-50: structure, parameter counts, sizes, resampling, recipes."""
import pytest
import timm
import torch

from attnzoo.errors import UserError
from attnzoo.layers.lesa import LESA, resample_relative_flat
from attnzoo.models.lesa import LESAResNet, lesa_resnet50, lesa_wrn50

TINY = dict(layers=(1, 1, 2, 1), img_size=32, num_classes=5)


def _tiny(**kw):
    torch.manual_seed(0)
    return lesa_resnet50(**{**TINY, **kw})


def test_param_counts_match_official_configs():
    # Measured against Chenglin-Yang/LESA_classification resnet50(cfg) with both configs (no forward).
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        assert sum(p.numel() for p in lesa_resnet50().parameters()) == 23_777_512
        assert sum(p.numel() for p in lesa_wrn50().parameters()) == 61_145_896


def test_layout_of_official_config():
    m = LESAResNet(layers=(3, 4, 6, 3), img_size=64, num_classes=3)
    assert m.stage_sizes == [(16, 16), (8, 8), (4, 4), (4, 4)]
    kinds = [[isinstance(b.conv2, LESA) for b in getattr(m, f"layer{i}")] for i in range(1, 5)]
    assert kinds == [[False] * 3, [False] * 4, [False] + [True] * 5, [True] * 3]
    assert m.layer4[0].conv2.fmap_size == (4, 4) and m.layer4[0].conv2.in_planes == 512
    assert not hasattr(m.layer3[1], "bn2")


def test_forward_train_step_and_head():
    m = _tiny()
    x = torch.randn(2, 3, 32, 32)
    assert m.forward_features(x).shape == (2, 2048, 2, 2)
    out = m(x)
    assert out.shape == (2, 5)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert m.layer4[0].conv2.relative.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 2048)
    m.reset_classifier(7)
    assert m.get_classifier().out_features == 7 and m.num_classes == 7


def test_wide_doubles_width_only_inside_bottleneck():
    m = lesa_wrn50(**TINY)
    assert m.layer3[1].conv2.in_planes == 512 and m.layer3[1].conv3.out_channels == 1024


def test_other_placements_are_kwargs():
    m = _tiny(layers=(1, 2, 2, 1), lesa_stages=(2, 3, 4), first_conv_stages=(),
              lesa_kwargs={"groups": 4, "pe_type": "detection_qr"})
    assert isinstance(m.layer2[0].conv2, LESA) and m.layer2[0].conv2.stride == 2
    assert m.layer2[0].conv2.fmap_size == (8, 8) and m.layer2[1].conv2.fmap_size == (4, 4)
    assert m.layer3[1].conv2.pe_type == "detection_qr"
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_wrong_input_size_names_built_size():
    m = _tiny()
    with pytest.raises(UserError, match="32x32.*64x64"):
        m(torch.randn(1, 3, 64, 64))


def test_weights_resampled_to_own_size_unchanged_and_to_another_size_like_a_direct_build():
    small = _tiny().eval()
    trained = small.state_dict()
    same = _tiny(img_size=32)
    same.load_state_dict(trained)
    assert all(torch.equal(v, trained[k]) for k, v in same.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(same.eval()(x), small(x))

    big = _tiny(img_size=64)
    direct = {k: v.shape for k, v in big.state_dict().items()}  # a network built at 64 px
    big.load_state_dict(trained)
    resampled = [k for k in trained if trained[k].shape != direct[k]]
    assert resampled and all(k.endswith(".relative") for k in resampled)
    for k, v in big.state_dict().items():
        assert v.shape == direct[k]
        if k in resampled:
            block = k.removesuffix(".relative")
            old, new = small.get_submodule(block).fmap_size, big.get_submodule(block).fmap_size
            assert torch.equal(v, resample_relative_flat(trained[k], old, new))
        else:
            assert torch.equal(v, trained[k])
    with torch.no_grad():
        out = big.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_names_registered_and_not_timm_own():
    for name in ("lesa_resnet50", "lesa_wrn50"):
        assert timm.is_model(name)
        assert timm.models._registry._model_entrypoints[name].__module__ == "attnzoo.models.lesa"


@pytest.mark.parametrize("recipe, top1, top5, wide", [("lesa_resnet50_imagenet", 79.55, 94.79, False),
                                                      ("lesa_wrn50_imagenet", 80.18, 95.07, True)])
def test_recipes(recipe, top1, top5, wide):
    from attnzoo.engine.config import load_config

    cfg = load_config(recipe)
    assert cfg.paper["top1"] == top1 and cfg.paper["top5"] == top5
    assert cfg.optim.lr == 0.05 and cfg.optim.nesterov and cfg.data.batch_size == 512
    assert cfg.schedule.epochs == 95 and cfg.schedule.warmup_epochs == 5
    m = timm.create_model(cfg.model.name, **{**cfg.model.kwargs, **TINY})  # tiny forward, not 224
    assert m.base_width == (128 if wide else 64)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 5)
