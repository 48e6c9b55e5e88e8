"""Every block traces with torch.fx the way timm and torchvision extract features (timm's leaf
registration), and compiles with TorchScript unless `NOT_SCRIPTABLE` names it; both give the
eager outputs."""
import copy
import warnings

import pytest
import torch
from timm.layers import create_feature_extractor, get_graph_node_names
from torch import nn

from attnzoo.errors import UserError
from attnzoo.layers import (LESA, LSAS, NOT_SCRIPTABLE, SAM, SE, BNSqueezeExcite, InterventionalClassifier,
                            SANBottleneck, ShiftBalance)

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


@pytest.mark.parametrize("name", BLOCKS)
def test_fx_feature_extraction_equals_eager(name):
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


def test_fx_keeps_the_data_dependent_checks():
    """The checks are leaves, not traced away: the traced module still rejects a wrong input."""
    for name, bad in (("lesa", (1, 16, 5, 5)), ("sam_pairwise", (1, 8, 1, 1)), ("ida_heavy", (1, 8, 3, 3))):
        block, _ = _make(name)
        traced = create_feature_extractor(Wrapper(block).eval(), {get_graph_node_names(Wrapper(block))[1][-1]: "out"})
        with pytest.raises(UserError):
            traced(torch.randn(bad))


@pytest.mark.parametrize("name", BLOCKS)
def test_torchscript_equals_eager_or_is_named_as_unsupported(name):
    block, x = _make(name)
    if isinstance(block, NOT_SCRIPTABLE):
        with pytest.raises(Exception):
            _script(block)
        return
    scripted = _script(copy.deepcopy(block))
    with torch.no_grad():
        for mode in (True, False):
            block.train(mode), scripted.train(mode)
            torch.testing.assert_close(scripted(x), block(x), rtol=0, atol=1e-6)


def test_only_lesa_is_not_scriptable():
    assert NOT_SCRIPTABLE == (LESA,)
