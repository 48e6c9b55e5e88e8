"""The model contract timm's own tests check (tests/test_models.py), for attnzoo's networks.

Pretrained cfgs are checked for every registered name (no construction). The rest runs on one
network per family variant, at reduced size, as timm samples its list: depth duplicates (ResNet
56/110/164, 101/152) share their code with the sampled depth; IDA and LESA/SAN are built small.
"""
import copy
import math
import warnings

import pytest
import timm
import torch
import torchvision.models.feature_extraction as tv_fx
import torchvision.models.resnet as tv_resnet
from safetensors.torch import save_file
from timm.models._features import FeatureGetterNet

import attnzoo
from attnzoo.data.cifar import MEAN as CIFAR_MEAN
from attnzoo.errors import UserError
from attnzoo.layers import NOT_SCRIPTABLE
from attnzoo.models import ATTNZOO_MODELS

from ..conftest import EXTRACTORS

SAN_SMALL = dict(layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3))
LESA_SMALL = dict(layers=(1, 1, 2, 1), img_size=32)
SAMPLED = {  # name -> (constructor options, input size)
    "resnet20_cifar": ({}, 32),
    "senet_cifar": (dict(depth=11), 32),
    "lsas_senet_cifar": (dict(depth=11), 32),
    "lsas_senet_allstages_cifar": (dict(depth=8, block="basic"), 32),
    "senet_resnet18": ({}, 64),
    "lsas_senet_resnet18": ({}, 64),
    "se_vgg16_cifar": ({}, 32),
    "sb_vgg16_cifar": ({}, 32),
    "san10_pairwise": (SAN_SMALL, 64),
    "san10_patchwise": (SAN_SMALL, 64),
    "san_resnet26": ({}, 64),
    "lesa_resnet50": (LESA_SMALL, 32),
    "ida": (dict(backbone="resnet18", num_classes=5, ffn_dim=64), 64),
    "mlc_baseline": (dict(backbone="resnet18", num_classes=5), 64),
}
SAME_CODE = {  # not built here -> the sampled network whose code (at another depth) it is
    **{f"resnet{d}_cifar": "resnet20_cifar" for d in (56, 110, 164)}, "resnet_cifar": "resnet20_cifar",
    "vgg16_cifar": "se_vgg16_cifar",
    "senet164_cifar": "senet_cifar", "lsas_senet164_cifar": "lsas_senet_cifar",
    "lsas_senet164_allstages_cifar": "lsas_senet_allstages_cifar",
    **{f"senet_resnet{d}": "senet_resnet18" for d in (34, 50, 101, 152)},
    **{f"lsas_senet_resnet{d}": "lsas_senet_resnet18" for d in (34, 50, 101, 152)},
    **{f"san{d}_{kind}": f"san10_{kind}" for d in (15, 19) for kind in ("pairwise", "patchwise")},
    "lesa_wrn50": "lesa_resnet50",
    "san_resnet38": "san_resnet26", "san_resnet50": "san_resnet26",
    **{n: "ida" for n in ("ida_resnet50", "ida_resnet101", "ida_resnet101_light", "ida_resnet101_official")},
}
# TorchScript: one network per class and attention block (compiling is slow); LESA's blocks are
# attnzoo.layers.NOT_SCRIPTABLE.
SCRIPTED = ("lsas_senet_cifar", "senet_resnet18", "se_vgg16_cifar", "sb_vgg16_cifar", "san10_patchwise", "ida")
UNSCRIPTABLE = ("lesa_resnet50",)


def _create(name, **extra):
    kwargs, _ = SAMPLED[name]
    torch.manual_seed(0)
    return timm.create_model(name, **{**kwargs, **extra})


def _input(name, batch=2, chans=3):
    size = SAMPLED[name][1]
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(1))


def test_every_registered_network_is_sampled_or_shares_a_sampled_ones_code():
    assert ATTNZOO_MODELS == set(SAMPLED) | set(SAME_CODE) and set(SAME_CODE.values()) <= set(SAMPLED)


@pytest.mark.parametrize("name", sorted(ATTNZOO_MODELS))
def test_pretrained_cfg_of_every_network(name):
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    for key in ("input_size", "pool_size", "crop_pct", "mean", "std", "num_classes", "first_conv",
                "classifier", "origin_url", "paper_name", "license"):
        assert cfg.get(key) is not None, key
    assert cfg["origin_url"].startswith("https://github.com/") and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert not (cfg.get("url") or cfg.get("hf_hub_id"))  # attnzoo ships no weights: nothing to download
    if name.endswith("_cifar"):
        assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 10
        assert cfg["mean"] == ((0.5,) * 3 if "vgg" in name else CIFAR_MEAN)  # each seed's normalisation
    elif name.startswith(("ida", "mlc")):
        assert cfg["input_size"] == (3, 448, 448) and cfg["num_classes"] == 80
    else:
        assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN


@pytest.mark.parametrize("name, size", [("resnet20_cifar", 32), ("senet_resnet50", 224), ("ida_resnet101", 448),
                                        ("sb_vgg16_cifar", 32), ("lesa_resnet50", 224)])
def test_resolve_data_config_gives_the_size_the_network_was_built_for(name, size):
    with torch.device("meta"):  # the cfg only: no weights
        model = timm.create_model(name)
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, size, size)


@pytest.mark.parametrize("name", SAMPLED)
def test_forward_backward_and_cfg_consistency(name):
    model = _create(name)
    x = _input(name)
    out = model(x)
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state
    assert any(k.startswith(f"{cfg['classifier']}.") for k in state)
    last = model.feature_info[-1]["reduction"]
    assert tuple(s * last for s in cfg["pool_size"]) == cfg["input_size"][1:]


@pytest.mark.parametrize("name", SAMPLED)
def test_head_api(name):
    model = _create(name, in_chans=1).eval()
    x = _input(name, chans=1)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[:2] == (2, model.num_features)
        assert torch.equal(model.forward_head(feats), model(x))
        pre = model.forward_head(feats, pre_logits=True)
        model.reset_classifier(0)
        assert model.head_hidden_size == pre.shape[1] and torch.equal(model(x), pre)
        model.reset_classifier(0, "")
        assert torch.equal(model(x), feats)
        for pool in ("max", "avgmax", "catavgmax", "avg"):
            model.reset_classifier(3, pool)
            assert model(x).shape == (2, 3) and model.num_classes == 3
            assert model.head_hidden_size == model.forward_head(feats, pre_logits=True).shape[1]
    with pytest.raises(UserError, match="global_pool 'mean' is not valid"):
        model.reset_classifier(3, "mean")


def test_global_pool_at_construction():
    model = timm.create_model("resnet20_cifar", global_pool="catavgmax", num_classes=4)
    assert model.get_classifier().in_features == 128 and model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    vgg = timm.create_model("vgg16_cifar", global_pool="max", num_classes=0)
    assert vgg(torch.randn(1, 3, 32, 32)).shape == (1, 256)  # VGG's MLP comes after the pooling
    unpooled = timm.create_model("vgg16_cifar", global_pool="", num_classes=0)
    assert unpooled(torch.randn(1, 3, 32, 32)).shape == (1, 512, 2, 2)
    with pytest.raises(UserError, match="removes the MLP head"):
        timm.create_model("vgg16_cifar", global_pool="")


@pytest.mark.parametrize("name", SAMPLED)
def test_forward_intermediates_and_pruning(name):
    model = _create(name).eval()
    x = _input(name)
    info = model.feature_info
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert len(feats) == len(info) >= 3
        for f, i in zip(feats, info, strict=True):
            assert f.shape == (2, i["num_chs"], x.shape[2] // i["reduction"], x.shape[3] // i["reduction"])
        assert [t.shape for t in model.forward_intermediates(x, indices=2, intermediates_only=True)] == \
            [t.shape for t in feats[-2:]]
        early, taken = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, feats[1]) and torch.equal(taken[0], feats[1])
        kept = model.prune_intermediate_layers([0, 1])
        assert kept == [0, 1] and model.num_classes == 0
        assert torch.equal(model.forward_features(x), feats[1]) and torch.equal(model(x), feats[1])
        again = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert len(again) == 2 and all(torch.equal(a, b) for a, b in zip(again, feats, strict=False))


def _timm_drops_its_stem_pool() -> bool:
    """Whether the installed timm's own ResNet, pruned to its stem tap, drops the max pool after it
    (timm 1.0.31 does, the floor's 1.0.26 keeps it). IDA and mlc_baseline prune their timm backbone
    with timm's own method, so they do what the installed timm does."""
    with torch.device("meta"):
        resnet = timm.create_model("resnet18")
    resnet.prune_intermediate_layers([0], prune_norm=True)
    return isinstance(resnet.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("name", SAMPLED)
def test_prune_contract(name):
    """timm's prune contract: keeping every stage with prune_head=False changes nothing; pruned to
    any tap (the stem's too, whose max pool must go with stage 1), the taps are the unpruned ones and
    forward_features ends at the tap; a pruned network trains with every parameter used."""
    model = _create(name).eval()
    x = _input(name)
    last = len(model.feature_info) - 1
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
        kept = copy.deepcopy(model)
        assert kept.prune_intermediate_layers([last], prune_head=False) == [last]
        assert kept.num_classes == model.num_classes and torch.equal(kept(x), expected)
    for i in range(last + 1):
        pruned = copy.deepcopy(model)
        take = pruned.prune_intermediate_layers([i], prune_norm=True)
        with torch.no_grad():
            assert torch.equal(pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0], taps[i])
            timm_backbone = type(getattr(model, "backbone", None)).__module__.startswith("timm.")
            if not (i == 0 and timm_backbone and not _timm_drops_its_stem_pool()):
                assert torch.equal(pruned.forward_features(x), taps[i]), f"forward_features pruned to tap {i}"
        pruned.train()
        tap = pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0]
        (tap.sum() + pruned.forward_features(x).sum()).backward()
        unused = [n for n, p in pruned.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, f"pruned to tap {i}: {unused}"


@pytest.mark.parametrize("name", SAMPLED)
def test_a_network_cast_to_bfloat16_computes_in_bfloat16(name):
    """model.to(torch.bfloat16) gives bfloat16 outputs in training and in eval (LESA's lean
    attention computes in float32 inside)."""
    model = _create(name).to(torch.bfloat16)
    x = _input(name).to(torch.bfloat16)
    out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.bfloat16}
    with torch.no_grad():
        assert model.eval()(x).dtype == torch.bfloat16


@pytest.mark.parametrize("name", SAMPLED)
def test_features_only(name):
    kwargs, size = SAMPLED[name]
    full = _create(name).eval()
    n = len(full.feature_info)
    torch.manual_seed(0)
    net = timm.create_model(name, features_only=True, **kwargs).eval()  # every level by default
    assert isinstance(net, FeatureGetterNet)
    x = _input(name)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == n and net.feature_info.channels() == [o.shape[1] for o in outs]
    assert [math.ceil(size / r) for r in net.feature_info.reduction()] == [o.shape[-1] for o in outs]
    wanted = (1, 2)
    pruned = FeatureGetterNet(copy.deepcopy(full), out_indices=wanted)  # what features_only builds
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in full.parameters())
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=list(wanted), intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(pruned(x), expected, strict=True))


@pytest.mark.parametrize("name", ["resnet20_cifar", "sb_vgg16_cifar", "san10_pairwise", "lesa_resnet50", "ida"])
def test_feature_classes_take_the_same_maps(name):
    """feature_info's module names are what timm's FX and hook extractors take the maps from."""
    kwargs, _ = SAMPLED[name]
    x = _input(name, batch=1)
    outs = {}
    for cls in ("getter", "fx", "hook"):
        torch.manual_seed(0)
        net = timm.create_model(name, features_only=True, feature_cls=cls, out_indices=(0, 1, 2, 3), **kwargs)
        with torch.no_grad():
            outs[cls] = list(net.eval()(x))
    assert all(torch.equal(a, b) for cls in ("fx", "hook") for a, b in zip(outs["getter"], outs[cls], strict=True))


@pytest.mark.parametrize("name, kwargs, size", [
    ("lsas_senet_resnet50", {}, 64), ("san10_pairwise", {}, 128), ("lesa_resnet50", dict(img_size=32), 32)])
def test_detector_style_features(name, kwargs, size):
    net = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4), **kwargs).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, size, size))
    strides = [size // o.shape[-1] for o in outs]
    assert strides == net.feature_info.reduction() == ([4, 8, 16, 16] if "lesa" in name else [4, 8, 16, 32])
    assert [o.shape[1] for o in outs] == net.feature_info.channels() == [256, 512, 1024, 2048]


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize("name", SAMPLED)
def test_fx_feature_extraction(name, extractor):
    """The stage outputs (feature_info's modules) and the logits, as forward_intermediates and
    forward give them; gradients reach every parameter through the train-mode graph."""
    get_graph_node_names, create_feature_extractor = EXTRACTORS[extractor]
    model = _create(name, num_classes=3).eval()
    x = _input(name, batch=1)
    _, eval_nodes = get_graph_node_names(model)
    stages = [i["module"] for i in model.feature_info]
    fx = create_feature_extractor(model, return_nodes=stages + [eval_nodes[-1]])
    with torch.no_grad():
        expected = model.forward_intermediates(x)[1] + [model(x)]
        for a, b in zip(fx(x).values(), expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    train = create_feature_extractor(model.train(), return_nodes=[eval_nodes[-1]])
    next(iter(train(_input(name)).values())).float().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


HOSTS = {  # add_attention's host families, each at its smallest: name -> (build, input side)
    "torchvision_basic": (lambda: tv_resnet.resnet18(num_classes=3), 32),
    "torchvision_bottleneck": (lambda: tv_resnet.ResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], num_classes=3), 32),
    "timm_basic": (lambda: timm.create_model("resnet10t", num_classes=3), 32),
    "timm_bottleneck_se": (lambda: timm.create_model("seresnet50", num_classes=3, layers=[1, 1, 1, 1]), 32),
    "timm_regnety": (lambda: timm.create_model("regnety_002", num_classes=3), 32),
    "timm_convnext": (lambda: timm.create_model("convnext_atto", num_classes=3), 32),
    "attnzoo_cifar": (lambda: timm.create_model("resnet20_cifar", num_classes=3), 32),
}


@pytest.mark.parametrize("position", ["end", "beside"])
@pytest.mark.parametrize("host", HOSTS)
def test_torchvision_feature_extraction_on_every_add_attention_host(host, position):
    build, size = HOSTS[host]
    torch.manual_seed(0)
    model = attnzoo.add_attention(build(), "lsas_se", position=position)[0].eval()
    x = torch.randn(1, 3, size, size)
    _, eval_nodes = tv_fx.get_graph_node_names(model)  # node names found here, not assumed
    attn_nodes = [n for n in eval_nodes if ".attn" in n or ".se" in n][-1:]
    fx = tv_fx.create_feature_extractor(model, return_nodes=attn_nodes + [eval_nodes[-1]])
    with torch.no_grad():
        outs = fx(x)
        torch.testing.assert_close(outs[eval_nodes[-1]], model(x), rtol=1e-5, atol=1e-5)
    assert attn_nodes and outs[attn_nodes[0]].dim() == 4  # an inserted block's output, taken by name


@pytest.mark.parametrize("name", ["san10_pairwise", "san19_patchwise"])
def test_min_input_size_is_the_true_minimum(name):
    """Works at the cfg's min_input_size, fails one stride below with a one-line error."""
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    side, stride = cfg["min_input_size"][-1], 32
    torch.manual_seed(0)
    model = timm.create_model(name, layers=(1, 1, 1, 1, 1), num_classes=3).eval()  # the kernels of `name`
    assert model.feature_info[-1]["reduction"] == stride and model.min_size == side
    with torch.no_grad():
        assert model(torch.randn(1, 3, side, side)).shape == (1, 3)
        assert model(torch.randn(1, 3, side, side + 1)).shape == (1, 3)
        for h, w in ((side - 1, side), (side, side - stride)):
            with pytest.raises(UserError, match=f"at least {side}x{side} pixels, got {h}x{w}"):
                model(torch.randn(1, 3, h, w))
        traced = tv_fx.create_feature_extractor(model, return_nodes=["relu4"])  # the check stays in the graph
        with pytest.raises(UserError, match=f"at least {side}x{side}"):
            traced(torch.randn(1, 3, side - stride, side - stride))


def test_device_and_dtype_options_the_timm_way():
    """timm's create_model(device=..., dtype=...): built there; a new head follows the network."""
    model = timm.create_model("lsas_senet_cifar", depth=11, device="meta", dtype=torch.float64)
    assert {t.device.type for t in model.state_dict().values()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.float64} and model.in_chans == 3
    model.eval().reset_classifier(4)
    assert model.fc.weight.device.type == "meta" and model.fc.weight.dtype == torch.float64
    assert not model.fc.training
    vgg = timm.create_model("vgg16_cifar", device="meta", num_classes=0, global_pool="")
    vgg.reset_classifier(5)  # classes bring back the pooled MLP head, on the network's device
    assert vgg.fc.weight.device.type == "meta" and vgg.global_pool.pool_type == "avg"


@pytest.mark.parametrize("name", SCRIPTED + UNSCRIPTABLE)
def test_torchscript(name):
    model = _create(name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated upstream
        if name in UNSCRIPTABLE:
            assert any(isinstance(m, NOT_SCRIPTABLE) for m in model.modules())
            with pytest.raises(Exception):  # noqa: B017 - TorchScript's message about autograd functions
                torch.jit.script(model)
            return
        scripted = torch.jit.script(model)
    x = _input(name)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_gives_the_same_gradients():
    for name in ("resnet20_cifar", "san10_pairwise", "sb_vgg16_cifar"):
        model, x = _create(name), _input(name)
        model(x).sum().backward()
        plain = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model.set_grad_checkpointing(True)
        model(x).sum().backward()
        assert all(torch.allclose(a, p.grad, atol=1e-5) for a, p in zip(plain, model.parameters(), strict=True))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_the_timm_way(tmp_path, fmt):
    source = _create("lsas_senet_cifar")
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    local = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for create in (timm.create_model, attnzoo.create_model):
        model = create("lsas_senet_cifar", depth=11, **local)
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
        assert model.pretrained_cfg["file"] == str(path) and model.pretrained_cfg.get("state_dict") is None
    other = attnzoo.create_model("lsas_senet_cifar", depth=11, num_classes=3, **local)  # new classifier
    assert torch.equal(other.conv1.weight, source.conv1.weight) and other.fc.out_features == 3
    gray = attnzoo.create_model("lsas_senet_cifar", depth=11, in_chans=1, **local)  # timm adapts the stem
    assert torch.allclose(gray.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


@pytest.mark.parametrize("create", [timm.create_model, attnzoo.create_model])
def test_bad_weight_files_are_one_line_user_errors_naming_the_file(tmp_path, create):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    wrong = tmp_path / "wrong.safetensors"
    save_file(_create("resnet20_cifar").state_dict(), str(wrong))
    shapes = tmp_path / "shapes.safetensors"  # the same keys, a wider SE
    save_file(_create("senet_cifar", attn_kwargs=dict(rd_ratio=0.5)).state_dict(), str(shapes))

    for path, facts in ((tmp_path / "none.pth", ["does not exist"]), (junk, ["cannot be read"]),
                        (wrong, ["senet_cifar", "missing keys", "layer1.0.conv3.weight"]),
                        # the first mis-shaped key, with the file's and the model's shapes
                        (shapes, ["senet_cifar", "layer1.0.attn.fc1.weight (32, 64) vs (4, 64)"])):
        with pytest.raises(UserError) as err:
            create("senet_cifar", depth=11, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        message = str(err.value)
        assert "\n" not in message and str(path) in message and all(f in message for f in facts), message


def test_pretrained_without_a_file_is_refused():
    with pytest.raises(UserError, match="downloads no weights"):
        attnzoo.create_model("senet_cifar", pretrained=True)


def test_a_timm_network_with_unfitting_weights_is_one_line_naming_the_file(tmp_path):
    wrong = tmp_path / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=4).state_dict(), str(wrong))
    with pytest.raises(UserError) as err:  # the same classes: timm loads strictly, the stem differs
        attnzoo.create_model("resnet18", num_classes=4, pretrained=True, pretrained_cfg_overlay=dict(file=str(wrong)))
    message = str(err.value)
    assert "\n" not in message and str(wrong) in message and "resnet18" in message and " vs " in message


@pytest.mark.parametrize("name, kwargs", [("lsas_senet_cifar", dict(depth=11)), ("resnet18", {})])
def test_model_pretrained_in_a_config_loads_the_timm_way(tmp_path, name, kwargs):
    from attnzoo.engine.config import load_config
    from attnzoo.engine.train import build_model

    torch.manual_seed(0)
    source = timm.create_model(name, **kwargs)  # its pretrained cfg's classes: 10 and 1000
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    cfg = load_config(overrides=[f"model.name={name}", f"model.pretrained={tmp_path / 'w.safetensors'}"]
                      + [f"model.kwargs.{k}={v}" for k, v in kwargs.items()])
    model = build_model(cfg, num_classes=10)
    assert model.fc.out_features == 10  # timm drops a classifier of another class count
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items()
               if not (k.startswith("fc.") and v.shape != source.state_dict()[k].shape))
