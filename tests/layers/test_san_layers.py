"""SAN's SAM (pairwise, patchwise) and bottleneck: shapes, parameters, backends, errors."""
import pytest
import torch

from attnzoo.errors import UserError
from attnzoo.layers.san import SAM, SANBottleneck, position_grid


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
@pytest.mark.parametrize("stride", [1, 2])
def test_sam_shapes(sa_type, stride):
    sam = SAM(sa_type, 16, 2, 8, share_planes=4, kernel_size=3, stride=stride)
    x = torch.randn(2, 16, 6, 6)
    assert sam.attention_weights(x).shape == (2, 2, 9, (6 // stride) ** 2)
    assert sam(x).shape == (2, 8, 6 // stride, 6 // stride)


def test_sam_parameter_shapes_follow_the_official_module():
    pair, patch = SAM("pairwise", 64, 4, 16, 8, kernel_size=7), SAM(1, 64, 4, 16, 8, kernel_size=7)
    assert pair.conv_w[2].weight.shape == (4, 4 + 2, 1, 1) and pair.conv_w[5].weight.shape == (2, 4, 1, 1)
    assert pair.conv_p.weight.shape == (2, 2, 1, 1)
    assert patch.conv_w[2].weight.shape == (2, 4 * 50, 1, 1) and patch.conv_w[5].weight.shape == (98, 2, 1, 1)
    assert patch.conv_p is None and not any("conv_p" in k for k in patch.state_dict())


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_sam_backends_agree_forward_and_backward(sa_type):
    torch.manual_seed(0)
    sam = SAM(sa_type, 8, 2, 8, share_planes=2, kernel_size=3).double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    outs, grads = {}, {}
    for backend in ("reference", "torch"):
        sam.backend = backend
        outs[backend] = sam(x)
        grads[backend] = torch.autograd.grad(outs[backend].square().sum(), [x, *sam.parameters()])
    torch.testing.assert_close(outs["torch"], outs["reference"])
    for a, b in zip(grads["torch"], grads["reference"], strict=True):
        torch.testing.assert_close(a, b)


def test_pairwise_weights_are_a_softmax_over_the_neighbourhood():
    sam = SAM("pairwise", 8, 2, 8, share_planes=2, kernel_size=3).eval()
    w = sam.attention_weights(torch.randn(1, 8, 4, 4))
    torch.testing.assert_close(w.sum(2), torch.ones(1, 4, 16))


def test_position_grid():
    p = position_grid(torch.zeros(1, 5, 2, 3))
    assert p.shape == (1, 2, 2, 3)
    torch.testing.assert_close(p[0, 0], torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]))
    torch.testing.assert_close(p[0, 1], torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def test_bottleneck_is_residual_and_keeps_shape():
    block = SANBottleneck("patchwise", 32, 2, 8, 32, share_planes=8, kernel_size=3)
    x = torch.randn(2, 32, 5, 5)
    assert block(x).shape == x.shape
    torch.nn.init.zeros_(block.conv.weight), torch.nn.init.zeros_(block.conv.bias)
    torch.testing.assert_close(block(x), x)


def test_bad_arguments():
    with pytest.raises(UserError, match="valid: pairwise, patchwise"):
        SAM("pairwize", 8, 2, 8, 2)
    with pytest.raises(UserError, match="divisible by share_planes"):
        SAM("pairwise", 8, 2, 9, 2)
    sam = SAM("pairwise", 8, 2, 8, 2, kernel_size=7)
    with pytest.raises(UserError, match="reflection padding"):
        sam(torch.randn(1, 8, 3, 3))  # a 7x7 window with reflection needs at least 4x4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_sam_under_cuda_autocast_policy(sa_type, dtype):
    """CUDA autocast returns the pairwise softmax in float32 beside bf16/fp16 values: the weights are
    cast down, the aggregation runs in the autocast dtype, near float32, and the backends agree."""
    from ..cuda_autocast import cuda_autocast

    torch.manual_seed(0)
    sam = SAM(sa_type, 16, 4, 16, share_planes=4, kernel_size=3)
    x = torch.randn(2, 16, 6, 6)
    ref = sam(x)
    proj = torch.randn_like(ref)  # a random projection: gradients of moderate size, no fp16 overflow
    # the value path, through the aggregation's backward (the attention branch's BatchNorms over a
    # few values amplify bf16 rounding in patchwise gradients, whatever the operators do)
    wanted = [sam.conv3.weight, sam.conv3.bias]
    gref = torch.autograd.grad((ref * proj).sum(), wanted)
    outs, grads = {}, {}
    for backend in ("reference", "torch"):
        sam.backend = backend
        with cuda_autocast(dtype):
            outs[backend] = sam(x)
        assert outs[backend].dtype == dtype
        grads[backend] = torch.autograd.grad((outs[backend].float() * proj).sum(), wanted)
        torch.testing.assert_close(outs[backend].float(), ref, rtol=0, atol=0.03 * ref.abs().max().item())
        for a, b in zip(grads[backend], gref, strict=True):
            assert (a.float() - b).norm() <= 0.05 * b.norm(), backend
    torch.testing.assert_close(outs["torch"], outs["reference"], rtol=0.02, atol=0.02)
    for a, b in zip(grads["torch"], grads["reference"], strict=True):
        torch.testing.assert_close(a, b, rtol=0.02, atol=0.02 * b.abs().max().item())
