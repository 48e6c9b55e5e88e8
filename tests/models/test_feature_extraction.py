"""torchvision's feature extraction (`get_graph_node_names`, `create_feature_extractor`, a plain
torch.fx tracer) on every registered network and on every `add_attention` host with every block.

Each network is built as registered, at its smallest input (the cfg's `min_input_size`, else its
`input_size`). Networks at CIFAR size are built with weights and their extracted maps must equal
`forward_intermediates` and the logits; the larger ones are built on the meta device (no weights,
no arithmetic), where the traced graph still runs and must give the same shapes. Their values are
checked on small builds of the same code in test_timm_contract.py. The cost is torchvision's
tracer, quadratic in the number of graph nodes (about 2,000 for the deepest CIFAR networks): a
name that builds the very network of another is traced once (`TWINS`), and the deepest graphs
skip `get_graph_node_names` (`DEEPEST`).
"""
import copy

import pytest
import timm
import torch
import torchvision.models.feature_extraction as tv_fx
import torchvision.models.resnet as tv_resnet

import attnzoo
from attnzoo.layers.factory import block_names

# name -> the registered name it is the very same network as (a default depth that equals a
# named depth): checked to build the same modules, then traced once, under the other name
TWINS = {"senet_cifar": "senet164_cifar", "lsas_senet_cifar": "lsas_senet164_cifar",
         "lsas_senet_allstages_cifar": "lsas_senet164_allstages_cifar"}
NETWORKS = [n for n in attnzoo.list_models() if n not in TWINS]
# the graphs of 1,000 to 2,100 nodes, where each trace takes seconds: get_graph_node_names (the
# same tracer, in the same two modes, as create_feature_extractor) is left out there
DEEPEST = ("lsas_senet164_allstages_cifar", "lsas_senet164_cifar", "senet164_cifar", "senet_resnet152",
           "lsas_senet_resnet152", "lsas_senet_resnet101")


def _smallest_input(name) -> tuple[int, int]:
    cfg = timm.models.get_pretrained_cfg(name)
    return tuple((cfg.min_input_size or cfg.input_size)[1:])


def _cifar_sized(name) -> bool:
    """Built for 32 px: small enough to build with weights and compare values."""
    return max(timm.models.get_pretrained_cfg(name).input_size[1:]) <= 32


def _build(name, device):
    torch.manual_seed(0)
    return timm.create_model(name, device=device).eval()


def test_every_network_is_traced_or_is_a_twin_of_one_that_is():
    assert set(NETWORKS) | set(TWINS) == set(attnzoo.list_models()) and set(TWINS.values()) <= set(NETWORKS)
    assert set(DEEPEST) <= set(NETWORKS)


@pytest.mark.parametrize("name", TWINS)
def test_twins_are_the_same_network(name):
    a, b = _build(name, "meta"), _build(TWINS[name], "meta")
    assert type(a) is type(b) and str(a) == str(b) and _smallest_input(name) == _smallest_input(TWINS[name])
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize("name", NETWORKS)
def test_torchvision_extractor_on_every_network(name):
    """The stage outputs (feature_info's modules, the maps `forward_intermediates` returns) and
    the logits (the cfg's classifier), through torchvision's extractor."""
    size = _smallest_input(name)
    real = _cifar_sized(name)
    model = _build(name, "cpu" if real else "meta")
    taps = [i["module"] for i in model.feature_info] + [model.pretrained_cfg["classifier"]]
    if name not in DEEPEST:
        for nodes in tv_fx.get_graph_node_names(model):  # train, eval: each tap is a node (or has nodes)
            assert all(any(n == t or n.startswith(f"{t}.") for n in nodes) for t in taps)
    extractor = tv_fx.create_feature_extractor(model, return_nodes=taps).eval()  # traced in both modes
    x = torch.randn(1, 3, *size, device=next(model.parameters()).device)
    with torch.no_grad():
        outs = list(extractor(x).values())
        final, maps = model.forward_intermediates(x)
        expected = maps + [model.forward_head(final)]
    assert [o.shape for o in outs] == [e.shape for e in expected]
    assert outs[-1].shape == (1, model.num_classes)
    if real:
        assert all(torch.equal(o, e) for o, e in zip(outs, expected, strict=True))


# add_attention's hosts: torchvision's resnet18 and timm's resnet10t (one block a stage), at 64 px
# (stage maps 16, 8, 4, 2). Each host takes four blocks at once, one a stage, so every block name
# is traced in both hosts with 5 traced networks each.
HOSTS = {"torchvision_resnet18": lambda: tv_resnet.resnet18(num_classes=3),
         "timm_resnet10t": lambda: timm.create_model("resnet10t", num_classes=3)}
SIDE = 64
STAGE_SIDE = (16, 8, 4, 2)  # the side of each stage's map at SIDE px, where its blocks sit
KINDS = block_names()
GROUPS = [KINDS[i:i + 4] for i in range(0, len(KINDS), 4)]  # blocks for stages 1, 2, ...


@pytest.fixture(scope="module")
def hosts():
    torch.manual_seed(0)
    return {name: build().eval() for name, build in HOSTS.items()}


def test_groups_cover_every_block():
    assert sorted(sum(GROUPS, [])) == sorted(block_names())


@pytest.mark.parametrize("group", GROUPS, ids="-".join)
@pytest.mark.parametrize("host", HOSTS)
def test_torchvision_extractor_on_every_add_attention_host(hosts, host, group):
    """The stage outputs and the logits of a host with a block in each stage equal the eager ones."""
    torch.manual_seed(0)
    model = copy.deepcopy(hosts[host])
    inserted = []
    for stage, kind in enumerate(group, start=1):
        options = dict(fmap_size=STAGE_SIDE[stage - 1]) if kind == "lesa" else {}
        inserted += attnzoo.add_attention(model, kind, stages=[stage], **options)[1].modules
    model.eval()
    train_nodes, eval_nodes = tv_fx.get_graph_node_names(model)  # node names found here, not assumed
    for nodes in (train_nodes, eval_nodes):  # every inserted block is in the graph, in both modes
        assert all(any(n == m or n.startswith(f"{m}.") for n in nodes) for m in inserted)
    stages = [f"layer{s}" for s in range(1, 5)]
    extractor = tv_fx.create_feature_extractor(model, return_nodes=stages + [eval_nodes[-1]]).eval()
    eager = {}
    for s in stages:  # the eager stage outputs, caught by hooks
        model.get_submodule(s).register_forward_hook(lambda m, i, o, s=s: eager.update({s: o}))
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        outs = list(extractor(x).values())
        logits = model(x)
    expected = [eager[s] for s in stages] + [logits]
    assert [o.shape[-1] for o in outs[:-1]] == list(STAGE_SIDE)
    assert all(torch.equal(o, e) for o, e in zip(outs, expected, strict=True))
