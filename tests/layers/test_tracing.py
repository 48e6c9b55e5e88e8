"""Every block traces with torch.fx the way timm and torchvision extract features (timm's
extractor, with its leaf registration, and torchvision's own, with a plain tracer), the traced
graph compiles with TorchScript, and the eager block compiles too unless `NOT_SCRIPTABLE` names
it; all give the eager outputs. Every name `block_names()` offers builds, runs and traces
(timm's GatherExcite, `ge`, as one call)."""
import copy
import re
import warnings

import pytest
import torch
import torchvision.models.feature_extraction as tv_fx
from torch import nn

from attnzoo.errors import UserError
from attnzoo.layers import (
    LESA,
    LSAS,
    NOT_SCRIPTABLE,
    SAM,
    SE,
    BNSqueezeExcite,
    InterventionalClassifier,
    SANBottleneck,
    ShiftBalance,
)
from attnzoo.layers.factory import block_names, create_block

from ..conftest import EXTRACTORS

BLOCKS = {  # name -> (constructor, input shape)
    "se": (lambda: SE(16), (2, 16, 5, 5)),
    "lsas_se": (lambda: LSAS(16, order=2), (2, 16, 5, 5)),
    "lsas_eca": (lambda: LSAS(16, attn="eca", order=2), (2, 16, 5, 5)),
    "lsas_cbam": (lambda: LSAS(16, attn="cbam", order=3), (2, 16, 5, 5)),
    "lsas_order0": (lambda: LSAS(16, order=0), (2, 16, 5, 5)),
    "sb": (lambda: ShiftBalance(16, activation="softmax"), (2, 16, 5, 5)),
    "se_bn": (lambda: BNSqueezeExcite(16), (2, 16, 5, 5)),
    "lesa": (lambda: LESA(16, fmap_size=(4, 5), groups=2), (2, 16, 4, 5)),
    "lesa_detection_qr": (lambda: LESA(16, fmap_size=4, groups=2, pe_type="detection_qr", stride=2), (2, 16, 4, 4)),
    "sam_pairwise": (lambda: SAM("pairwise", 8, 2, 8, share_planes=2, kernel_size=3), (2, 8, 5, 5)),
    "sam_patchwise": (lambda: SAM("patchwise", 8, 2, 8, share_planes=2, kernel_size=3, stride=2), (2, 8, 5, 5)),
    "san_bottleneck": (lambda: SANBottleneck("pairwise", 8, 2, 8, 8, share_planes=2, kernel_size=3), (2, 8, 5, 5)),
    "ida_heavy": (lambda: InterventionalClassifier(16, 3, num_heads=4, ffn_dim=8), (2, 16, 3, 3)),
    "ida_light": (lambda: InterventionalClassifier(16, 3, num_heads=2, heavy=False), (2, 16, 3, 3)),
}


class Wrapper(nn.Module):
    """What a network does with a block: calls it with one tensor."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


def _make(name):
    torch.manual_seed(0)
    make, shape = BLOCKS[name]
    block = make()
    with torch.no_grad():  # non-trivial BatchNorm statistics for eval mode
        for m in block.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return block, torch.randn(shape)


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in favour of torch.compile
        return torch.jit.script(module)


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize("name", BLOCKS)
def test_fx_feature_extraction_equals_eager(name, extractor):
    get_graph_node_names, create_feature_extractor = EXTRACTORS[extractor]
    block, x = _make(name)
    model = Wrapper(block)
    train_nodes, eval_nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(model, {eval_nodes[-1]: "out"})  # traced in train and eval mode
    ours = copy.deepcopy(model)
    with torch.no_grad():
        for mode in (True, False):  # train mode runs first: both update the same running statistics
            extractor.train(mode), ours.train(mode)
            torch.testing.assert_close(extractor(x)["out"], ours(x), rtol=0, atol=1e-6)
    xg, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    extractor(xg)["out"].sum().backward()
    ours(xr).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", BLOCKS)
def test_traced_graph_scripts(name):
    """FX, then TorchScript (timm's test_model_forward_fx_torchscript): the leaves compile too."""
    block, x = _make(name)
    traced = tv_fx.create_feature_extractor(Wrapper(block).eval(), ["block"]).eval()
    if isinstance(block, NOT_SCRIPTABLE):
        with pytest.raises(Exception):  # noqa: B017 - whatever TorchScript says about autograd functions
            _script(traced)
        return
    with torch.no_grad():
        torch.testing.assert_close(_script(traced)(x)["block"], block.eval()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_fx_keeps_the_data_dependent_checks(extractor):
    """The checks are leaves, not traced away: the traced module still rejects a wrong input, with
    the eager error."""
    get_graph_node_names, create_feature_extractor = EXTRACTORS[extractor]
    for name, bad, says in (("lesa", (1, 16, 5, 5), "LESA block built for 4x5"),
                            ("sam_pairwise", (1, 8, 1, 1), "reflection padding"),
                            ("ida_heavy", (1, 8, 3, 3), "IDA head expects a feature map (N, 16, H, W)"),
                            ("se", (1, 8, 3, 3), "SE expects a feature map (N, 16, H, W), got shape [1, 8, 3, 3]")):
        block, _ = _make(name)
        traced = create_feature_extractor(Wrapper(block).eval(), {get_graph_node_names(Wrapper(block))[1][-1]: "out"})
        for run in (block.eval(), traced):
            with pytest.raises(UserError, match=re.escape(says)):
                run(torch.randn(bad))


@pytest.mark.parametrize("name", block_names())
def test_every_offered_block_builds_runs_and_traces(name):
    torch.manual_seed(0)
    block = create_block(name, 16, **(dict(fmap_size=6) if name == "lesa" else {})).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        out = block(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        for _, create_feature_extractor in EXTRACTORS.values():
            traced = create_feature_extractor(Wrapper(block).eval(), ["block"]).eval()
            torch.testing.assert_close(traced(x)["block"], out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("extent", [0, 2])
def test_gather_excite_is_one_call_in_the_traced_graph(extent):
    """timm's GatherExcite compares its gathered map's size with 1, which a symbolic trace cannot:
    the graph calls the block whole, in train and eval mode, and gives its outputs and gradients."""
    torch.manual_seed(0)
    model = Wrapper(create_block("ge", 16, extent=extent))
    train_nodes, eval_nodes = tv_fx.get_graph_node_names(model)
    assert train_nodes == eval_nodes == ["x", "block"]
    extractor = tv_fx.create_feature_extractor(model, ["block"])
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    for mode in (True, False):
        extractor.train(mode), model.train(mode)
        torch.testing.assert_close(extractor(x)["block"], model(x), rtol=0, atol=0)
    grad, = torch.autograd.grad(extractor(x)["block"].sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(model(x).sum(), x)[0], rtol=0, atol=0)


def test_ge_refuses_what_timm_cannot_build():
    with pytest.raises(UserError, match="extra_params"):
        create_block("ge", 16, extra_params=True)


@pytest.mark.parametrize("name", BLOCKS)
def test_torchscript_equals_eager_or_is_named_as_unsupported(name):
    block, x = _make(name)
    if isinstance(block, NOT_SCRIPTABLE):
        with pytest.raises(Exception):  # noqa: B017 - whatever TorchScript says about autograd functions
            _script(block)
        return
    scripted = _script(copy.deepcopy(block))
    with torch.no_grad():
        for mode in (True, False):
            block.train(mode), scripted.train(mode)
            torch.testing.assert_close(scripted(x), block(x), rtol=0, atol=1e-6)


def test_only_lesa_is_not_scriptable():
    assert NOT_SCRIPTABLE == (LESA,)
