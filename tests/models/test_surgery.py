"""add_attention on every supported host family: where blocks go, what they compute, weights."""
import copy

import pytest
import timm
import torch
import torchvision
from timm.models.resnet import Bottleneck as TimmBottleneck
from timm.models.resnet import ResNet as TimmResNet
from torch import nn

import attnzoo
from attnzoo import add_attention, load_host_weights
from attnzoo.errors import UserError
from attnzoo.layers import LSAS, SE
from attnzoo.weights import load_state_strict


def _tv_bottleneck():
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1],
                                            num_classes=4)


# host name -> (builder, blocks per stage, the block's path within a residual block, the path of
# the last norm before the addition within a residual block after the insertion, or None)
HOSTS = {
    "tv_resnet18": (lambda: torchvision.models.resnet18(num_classes=4),
                    {"layer1": 2, "layer2": 2, "layer3": 2, "layer4": 2}, "bn2.attn", "bn2.host"),
    "tv_bottleneck": (_tv_bottleneck, {"layer1": 1, "layer2": 1, "layer3": 1, "layer4": 1}, "bn3.attn",
                      "bn3.host"),
    "timm_resnet18": (lambda: timm.create_model("resnet18", num_classes=4),
                      {"layer1": 2, "layer2": 2, "layer3": 2, "layer4": 2}, "se", "bn2"),
    "timm_bottleneck": (lambda: TimmResNet(TimmBottleneck, [1, 1, 1, 1], num_classes=4),
                        {"layer1": 1, "layer2": 1, "layer3": 1, "layer4": 1}, "se", "bn3"),
    "regnetx_002": (lambda: timm.create_model("regnetx_002", num_classes=4),
                    {"s1": 1, "s2": 1, "s3": 4, "s4": 7}, "conv3.attn", "conv3.host.bn"),
    "convnext_atto": (lambda: timm.create_model("convnext_atto", num_classes=4),
                      {"stages.0": 2, "stages.1": 2, "stages.2": 6, "stages.3": 2}, "drop_path.attn", None),
    "resnet20_cifar": (lambda: attnzoo.create_model("resnet20_cifar", num_classes=4),
                       {"layer1": 3, "layer2": 3, "layer3": 3}, "attn", "bn2"),
    "resnet11_bottleneck_cifar": (lambda: attnzoo.create_model("resnet_cifar", depth=11, block="bottleneck",
                                                               num_classes=4),
                                  {"layer1": 1, "layer2": 1, "layer3": 1}, "attn", "bn3"),
}


def _host(name, seed=0):
    """The host in eval mode, its norm weights drawn at random (timm zero-inits the last ones)."""
    torch.manual_seed(seed)
    model = HOSTS[name][0]().eval()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model


def _force_open(model, report):
    """SE gates fixed at exactly 1: fc2 weight 0, bias 30 (float32 sigmoid(30) == 1)."""
    for path in report.modules:
        fc2 = model.get_submodule(path).fc2
        nn.init.zeros_(fc2.weight)
        nn.init.constant_(fc2.bias, 30.0)


@pytest.mark.parametrize("host", list(HOSTS))
def test_every_family_takes_the_block_at_the_papers_position(host):
    _, per_stage, attn, norm = HOSTS[host]
    model = _host(host)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    model, report = add_attention(model, "se", rd_ratio=0.25)
    assert report.stages == per_stage
    assert len(report.modules) == sum(per_stage.values()) and not report.replaced
    assert all(p.endswith(f".{attn}") for p in report.modules)
    assert all(isinstance(model.get_submodule(p), SE) for p in report.modules)
    seen = {}
    if norm:  # the block sees the last norm's output
        block_path = report.modules[-1].removesuffix(f".{attn}")
        model.get_submodule(f"{block_path}.{norm}").register_forward_hook(
            lambda m, i, out: seen.setdefault("norm", out))
        model.get_submodule(report.modules[-1]).register_forward_pre_hook(
            lambda m, a: seen.setdefault("attn", a[0]))
    trained = copy.deepcopy(model).train()  # a copy: training mode moves BatchNorm statistics
    trained(x).sum().backward()
    block = trained.get_submodule(report.modules[0])
    assert block.fc1.weight.grad is not None and block.fc1.weight.grad.abs().sum() > 0

    _force_open(model, report)
    seen.clear()
    with torch.no_grad():
        assert torch.equal(model(x), reference)  # an open gate leaves the host's function
    if norm:
        assert torch.equal(seen["attn"], seen["norm"])


@pytest.mark.parametrize("host", list(HOSTS))
def test_host_weights_load_strictly_and_the_new_keys_are_reported(host):
    host_state = _host(host, seed=1).state_dict()
    model, report = add_attention(_host(host), "lsas_se", order=2, stages=[2])
    assert list(report.stages) == [list(HOSTS[host][1])[1]]
    new = load_host_weights(model, host_state, report)
    assert new == report.new_keys and new and all(".attn." in k or ".se." in k for k in new)
    state = model.state_dict()
    moved = {report.legacy.rename(k): k for k in host_state}  # a wrapped module's keys gain 'host.'
    assert set(state) == set(moved) | set(new)
    assert all(torch.equal(state[k], host_state[old]) for k, old in moved.items())
    bad = dict(host_state)
    bad.pop(next(iter(bad)))
    with pytest.raises(UserError, match="missing keys"):
        load_host_weights(model, bad, report)


@pytest.mark.parametrize("host", ["tv_bottleneck", "regnetx_002", "convnext_atto"])
def test_checkpoints_of_the_layout_before_composition_load_strictly(host):
    """Before, the block sat in the residual block's own `attn` and the host module kept its keys."""
    model, report = add_attention(_host(host), "se", stages=[2, 3])
    twin, _ = add_attention(_host(host, seed=1), "se", stages=[2, 3])
    wrapped = {p.removesuffix(".attn") for p in report.modules}
    old = {}
    for k, v in model.state_dict().items():
        for w in wrapped:
            block = w.rsplit(".", 1)[0]
            k = k.replace(f"{w}.host.", f"{w}.").replace(f"{w}.attn.", f"{block}.attn.")
        old[k] = v
    assert old.keys() != model.state_dict().keys()
    twin.load_state_dict(old)  # strict
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
    twin.load_state_dict(model.state_dict())  # today's layout passes the key map unchanged
    load_state_strict(twin, old, "old checkpoint")  # the command line's strict loader: the same map


@pytest.mark.parametrize("host", ["tv_resnet18", "timm_resnet18", "regnetx_002", "convnext_atto"])
def test_scripts_and_traces_after_insertion(host):
    import warnings

    from timm.layers import create_feature_extractor, get_graph_node_names

    position = "beside" if host == "timm_resnet18" else "end"
    net, report = add_attention(_host(host), "lsas_se", order=2, position=position, stages=[1, 2])
    nodes = get_graph_node_names(net)[1]
    assert any(n.startswith(report.modules[0]) for n in nodes)  # the block is in the traced graph
    traced = create_feature_extractor(net, {nodes[-1]: "out"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.jit.script(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(traced(x)["out"], net(x)) and torch.equal(scripted(x), net(x))


def test_state_dict_round_trip_and_copies_keep_the_block():
    model, report = add_attention(_host("tv_resnet18"), "sb", stages=[3, 4])
    twin, _ = add_attention(_host("tv_resnet18", seed=3), "sb", stages=[3, 4])
    twin.load_state_dict(model.state_dict())  # strict
    x = torch.randn(2, 3, 32, 32)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x)) and torch.equal(clone(x), model(x))
    assert clone.layer4[0].bn2.attn is not model.layer4[0].bn2.attn
    _, again = add_attention(model, "se", stages=[4])  # a second block takes the first's place
    assert again.replaced == ["layer4.0.bn2.attn", "layer4.1.bn2.attn"]
    assert isinstance(model.layer4[0].bn2.attn, SE) and isinstance(model.layer4[0].bn2.host, nn.BatchNorm2d)


def test_beside_keeps_the_host_gate_and_gate_replaces_it():
    torch.manual_seed(0)
    host = timm.create_model("seresnet18", num_classes=4).eval()
    host_state = host.state_dict()
    model, report = add_attention(host, "lsas_se", position="beside")
    assert not report.replaced and type(model.layer1[0].se.host).__name__ == "SEModule"
    assert isinstance(model.layer1[0].se.attn, LSAS)
    assert load_host_weights(model, host_state, report) == report.new_keys  # SE keys unchanged
    model(torch.randn(2, 3, 32, 32))

    model, report = add_attention(timm.create_model("seresnet18"), "lsas_se")
    assert len(report.replaced) == 8 and isinstance(model.layer1[0].se, LSAS)

    model, report = add_attention(timm.create_model("regnety_002", num_classes=4), "sb", position="gate")
    assert len(report.replaced) == 13 and report.modules[0] == "s1.b1.se"
    model.eval()(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_beside_an_open_block_leaves_a_timm_se_resnet_unchanged(block):
    from timm.models.resnet import BasicBlock

    torch.manual_seed(0)
    host = TimmResNet(BasicBlock if block == "basic" else TimmBottleneck, [1, 1, 1, 1], num_classes=4,
                      block_args=dict(attn_layer="se")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = host(x)
    model, report = add_attention(host, "se", position="beside", stages=[1, 4])
    assert report.modules == ["layer1.0.se.attn", "layer4.0.se.attn"]
    _force_open(model, report)
    with torch.no_grad():
        assert torch.equal(model(x), reference)


def test_timm_attn_layer_takes_get_attn():
    model = timm.create_model("resnet50", block_args=dict(attn_layer=attnzoo.get_attn("lsas_se", order=2)))
    gates = [m for m in model.modules() if isinstance(m, LSAS)]
    assert len(gates) == 16 and all(g.order == 2 for g in gates)
    assert gates[0].base.fc1.in_features == 256
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_matches_senet_resnet50_in_parameter_count():
    with torch.device("meta"):
        tv = add_attention(torchvision.models.resnet50(), "se")[0]
        ours = attnzoo.create_model("senet_resnet50")
    assert sum(p.numel() for p in tv.parameters()) == sum(p.numel() for p in ours.parameters())


def test_host_plus_block_names():
    model = attnzoo.create_model("resnet18+sb", num_classes=3)
    assert sum(type(m).__name__ == "ShiftBalance" for m in model.modules()) == 8
    with pytest.raises(UserError, match="did you mean sb"):
        attnzoo.create_model("resnet18+sbb")
    with pytest.raises(UserError, match="unknown model 'resnet1800'"):
        attnzoo.create_model("resnet1800+se")


@pytest.mark.parametrize("model", [nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), "vgg16_cifar", "san10_pairwise"])
def test_unknown_architecture_is_a_clear_error(model):
    if isinstance(model, str):
        with torch.device("meta"):
            model = attnzoo.create_model(model)
    with pytest.raises(UserError, match="supported.*torchvision ResNet.*timm ResNet family"):
        add_attention(model, "se")


def test_bad_arguments():
    model = _host("resnet20_cifar")
    with pytest.raises(UserError, match="\\[4\\].*1 to 3.*layer1, layer2, layer3"):
        add_attention(model, "se", stages=[4])
    with pytest.raises(UserError, match="unknown position 'middle'"):
        add_attention(model, "se", position="middle")
    with pytest.raises(UserError, match="unknown attention block 'lsas'"):
        add_attention(model, "lsas")
    with pytest.raises(UserError, match="no gate of their own"):
        add_attention(_host("tv_resnet18"), "se", position="gate")
    with pytest.raises(UserError, match="attention block 'se'"):
        add_attention(model, "se", bogus=1)
    senet = attnzoo.create_model("senet_cifar", depth=11, block="bottleneck")
    with pytest.raises(UserError, match="position='end'"):
        add_attention(senet, "sb", position="beside")
