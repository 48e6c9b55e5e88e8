"""LESA block: the lean, folded and reference paths agree; checkpointing; resampling; bad input."""
import copy

import pytest
import torch

from attnzoo.errors import UserError
from attnzoo.layers.factory import create_block
from attnzoo.layers.lesa import LESA, relative_index, resample_relative_1d, resample_relative_flat
from attnzoo.ops import lesa_flat

PE = ("classification", "detection_qr")


def _block(pe_type, impl="lean", fmap=(4, 5), stride=1, **kw):
    torch.manual_seed(0)
    m = LESA(16, 16, fmap_size=fmap, stride=stride, groups=2, pe_type=pe_type, impl=impl, **kw).double()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():  # non-trivial BatchNorm affine and statistics
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            mod.weight.data = (torch.rand(n, generator=g) + 0.5).double()
            mod.bias.data = (torch.randn(n, generator=g) * 0.3).double()
            mod.running_mean.data = (torch.randn(n, generator=g) * 0.1).double()
            mod.running_var.data = (torch.rand(n, generator=g) + 0.5).double()
    return m


def _reference_of(m):
    r = copy.deepcopy(m)
    r.impl = "reference"
    return r


def _input(shape=(3, 16, 4, 5)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.parametrize("pe_type, chunk_bytes", [("classification", None), ("classification", 1),
                                                   ("classification", 2 * 20 * 39 * 8 * 2), ("detection_qr", None)])
def test_lean_training_step_equals_reference(pe_type, chunk_bytes, monkeypatch):
    if chunk_bytes is not None:  # one sample per chunk, or chunks of 2 and 1: the chunk loop and its last chunk
        monkeypatch.setattr(lesa_flat, "CHUNK_BYTES", chunk_bytes)
    m = _block(pe_type)
    r = _reference_of(m)
    x, xr = _input().requires_grad_(), _input().requires_grad_()
    y, yr = m(x), r(xr)
    assert y.shape == (3, 16, 4, 5)
    torch.testing.assert_close(y, yr, rtol=0, atol=1e-10)
    gy = torch.randn_like(y)
    y.backward(gy)
    yr.backward(gy)
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=1e-10)
    ref_params = dict(r.named_parameters())
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=0, atol=1e-9, msg=name)
    ref_buffers = dict(r.named_buffers())
    for name, b in m.named_buffers():  # running statistics updated exactly once, identically
        torch.testing.assert_close(b, ref_buffers[name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("pe_type", PE)
def test_eval_folded_and_grad_paths_equal_reference(pe_type):
    m = _block(pe_type).eval()
    r = _reference_of(m).eval()
    x = _input()
    with torch.no_grad():
        expected = r(x)
        folded = m(x)  # BatchNorm folded into scales (SDPA for detection_qr)
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-10)
    xg = x.clone().requires_grad_()
    out = m(xg)  # eval mode with autograd: the lean function with running statistics
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    out.sum().backward()
    xr = x.clone().requires_grad_()
    r(xr).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=1e-10)


def test_eval_detection_uses_sdpa(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    m = _block("detection_qr").eval()
    with torch.no_grad():
        m(_input())
    assert calls


def test_stride_pools_after_fusion():
    m = _block("classification", fmap=4, stride=2).eval()
    x = _input((2, 16, 4, 4))
    with torch.no_grad():
        y = m(x)
        m.pooling = torch.nn.Identity()
        full = m(x)
    assert y.shape == (2, 16, 2, 2)
    torch.testing.assert_close(y, torch.nn.functional.avg_pool2d(full, 2))


@pytest.mark.parametrize("pe_type", PE)
def test_checkpointing_same_result_and_single_stat_update(pe_type):
    m = _block(pe_type)
    c = copy.deepcopy(m)
    c.with_cp = True
    x, xc = _input().requires_grad_(), _input().requires_grad_()
    y, yc = m(x), c(xc)
    torch.testing.assert_close(yc, y, rtol=0, atol=1e-12)
    y.sum().backward()
    yc.sum().backward()
    torch.testing.assert_close(xc.grad, x.grad, rtol=0, atol=1e-10)
    for (name, b), (_, bc) in zip(m.named_buffers(), c.named_buffers(), strict=True):
        torch.testing.assert_close(bc, b, rtol=0, atol=0, msg=name)


def test_factory_builds_lesa():
    b = create_block("lesa", 16, fmap_size=3, groups=2)
    assert isinstance(b, LESA) and b(torch.randn(1, 16, 3, 3)).shape == (1, 16, 3, 3)


def test_relative_index_layout():
    assert relative_index(3).tolist() == [[2, 1, 0], [3, 2, 1], [4, 3, 2]]


def test_resampling_on_load_classification():
    small = _block("classification", fmap=3)
    big = LESA(16, 16, fmap_size=5, groups=2).double()
    big.load_state_dict(small.state_dict())  # relative (pe_dim, 17) -> (pe_dim, 49)
    assert big.relative.shape == (small.pe_dim, 49)
    # offset 0 stays offset 0
    torch.testing.assert_close(big.relative[:, 24], small.relative[:, 8].detach())
    assert big(torch.randn(1, 16, 5, 5, dtype=torch.float64)).shape == (1, 16, 5, 5)


def test_resampling_on_load_detection():
    small = _block("detection_qr", fmap=3)
    big = LESA(16, 16, fmap_size=(5, 4), groups=2, pe_type="detection_qr").double()
    big.load_state_dict(small.state_dict())
    assert big.rel_height.shape == (9, 4) and big.rel_width.shape == (7, 4)
    torch.testing.assert_close(big.rel_height[4], small.rel_height[2].detach())


def test_resample_functions_identity_and_constant():
    t = torch.randn(3, 31)
    assert torch.equal(resample_relative_flat(t, (4, 4), (4, 4)), t)
    const = torch.full((2, 31), 3.0)
    torch.testing.assert_close(resample_relative_flat(const, (4, 4), (7, 7)), torch.full((2, 97), 3.0))
    torch.testing.assert_close(resample_relative_1d(torch.arange(5.0)[:, None], 9, dim=0)[:, 0],
                               torch.arange(9.0) / 2)


def test_bad_channels_pe_type_and_size():
    with pytest.raises(UserError, match="groups=8"):
        LESA(20, 20, fmap_size=4, groups=8)
    with pytest.raises(UserError, match="valid: classification, detection_qr"):
        LESA(16, 16, fmap_size=4, groups=2, pe_type="detection")
    m = LESA(16, 16, fmap_size=4, groups=2)
    with pytest.raises(UserError, match="built for 4x4 .* got 5x5"):
        m(torch.randn(1, 16, 5, 5))
    with pytest.raises(UserError, match="impl"):
        LESA(16, 16, fmap_size=4, groups=2, impl="fast")
    with pytest.raises(UserError, match="stride 2"):
        LESA(16, 16, fmap_size=5, groups=2, stride=2)


@pytest.mark.parametrize("pe_type", PE)
def test_training_under_bf16_autocast_is_float32_within_bf16_tolerance(pe_type):
    """A training step under autocast with CUDA's policy (softmax, sums and norms in float32, the
    convolutions in bf16) against float32: the hand-written backward keeps bf16's accuracy."""
    from ..cuda_autocast import cuda_autocast

    torch.manual_seed(0)
    m = LESA(32, 32, fmap_size=(4, 5), groups=4, pe_type=pe_type).train()
    state = copy.deepcopy(m.state_dict())
    x, proj = torch.randn(4, 32, 4, 5), torch.randn(4, 32, 4, 5)

    def step(context):
        m.load_state_dict(state)
        m.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        with context:
            y = m(xx)
        (y.float() * proj).sum().backward()
        return y.float().detach(), xx.grad, {n: p.grad for n, p in m.named_parameters()}

    y, gx, grads = step(torch.autocast("cpu", enabled=False))
    yb, gxb, gradsb = step(cuda_autocast(torch.bfloat16))
    assert (yb - y).norm() <= 2e-2 * y.norm()
    assert (gxb - gx).norm() <= 5e-2 * gx.norm()
    scale = torch.cat([g.flatten() for g in grads.values()]).norm()
    for name, g in grads.items():
        if name == "bn_similarity.bias":  # zero up to round-off: the similarity's shifts cancel in the softmax
            assert gradsb[name].norm() <= 1e-3 * scale
        else:
            assert (gradsb[name] - g).norm() <= 0.1 * g.norm() + 1e-3 * scale, name


def test_chunks_are_sized_from_the_device(monkeypatch):
    """Cache-sized on the CPU; on CUDA a share of the free memory: LESA-ResNet-50's stage 3 (14x14,
    8 heads) at batch 128 in one chunk with 40 GiB free, where the CPU budget takes 43."""
    assert lesa_flat.chunk_budget(torch.device("cpu")) == lesa_flat.CHUNK_BYTES
    assert len(lesa_flat.chunks(128, 8, 196, 4, torch.device("cpu"))[0]) == 43
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 << 30, 80 << 30))
    cuda = torch.device("cuda", 0)
    assert lesa_flat.chunk_budget(cuda) == (40 << 30) // 32
    assert lesa_flat.chunks(128, 8, 196, 4, cuda) == ([(0, 128)], 128)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 80 << 30))
    assert len(lesa_flat.chunks(128, 8, 196, 4, cuda)[0]) == 10  # memory short: smaller chunks
