"""attnzoo's ECA and CBAM gates compute what timm's modules compute, on timm's weights."""
import pytest
import torch
from timm.layers.cbam import CbamModule
from timm.layers.eca import EcaModule

from attnzoo.layers.gates import CbamGate, EcaGate


@pytest.mark.parametrize("channels,kw", [(16, {}), (100, {}), (64, {"gamma": 1, "beta": 2})])
def test_eca_gate_equals_timm(channels, kw):
    torch.manual_seed(0)
    ours = EcaGate(channels, **kw)
    torch.manual_seed(0)
    timm_eca = EcaModule(channels, **kw)
    assert ours.state_dict().keys() == timm_eca.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), timm_eca.state_dict().values(),
                                                 strict=True))  # same init from the same seed
    with torch.no_grad():
        timm_eca.conv.weight.normal_()
    ours.load_state_dict(timm_eca.state_dict())  # strict
    x = torch.randn(2, channels, 5, 4)
    torch.testing.assert_close(ours(x), timm_eca(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x * torch.sigmoid(ours.logit(x)), timm_eca(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"rd_ratio": 0.25, "spatial_kernel_size": 3, "mlp_bias": True}])
def test_cbam_gate_equals_timm(kw):
    torch.manual_seed(0)
    ours = CbamGate(32, **kw)
    torch.manual_seed(0)
    timm_cbam = CbamModule(32, **kw)
    assert ours.state_dict().keys() == timm_cbam.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), timm_cbam.state_dict().values(),
                                                 strict=True))
    with torch.no_grad():
        for p in timm_cbam.parameters():
            p.normal_(0, 0.3)
    ours.load_state_dict(timm_cbam.state_dict())
    ours.eval(), timm_cbam.eval()
    x = torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_cbam(x), rtol=1e-5, atol=1e-6)
        channel_only = x * torch.sigmoid(ours.logit(x))
        torch.testing.assert_close(channel_only, timm_cbam.channel(x), rtol=1e-5, atol=1e-6)
