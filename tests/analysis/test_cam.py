"""Class activation maps: Grad-CAM, Eigen-CAM, Score-CAM on the last feature map."""
import pytest
import torch
from torch import nn

import attnzoo
from attnzoo.analysis.cam import _normalise, compute_cams, eigencam
from attnzoo.errors import UserError


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return attnzoo.create_model("resnet_cifar", depth=8, num_classes=5).eval()


def test_gradcam_matches_closed_form_for_gap_linear_head(net):
    x = torch.randn(3, 3, 16, 16)
    out = compute_cams(net, x, ("gradcam",), targets=torch.tensor([0, 2, 4]), upsample_to_input=False)
    feats = net.forward_features(x)  # (3, 64, 4, 4)
    # d logit_c / d A = w_c / (h w) at every position, so the weights are w_c / (h w)
    w = net.fc.weight[[0, 2, 4]] / 16
    ref = _normalise(torch.einsum("nc,nchw->nhw", w, feats))
    assert out["gradcam"].shape == (3, 4, 4)
    assert torch.allclose(out["gradcam"], ref, atol=1e-5)
    assert out["feat_hw"] == (4, 4)


def test_maps_are_batched_independently_and_in_unit_range(net):
    x = torch.randn(4, 3, 16, 16)
    both = compute_cams(net, x, ("gradcam", "eigencam"))
    one = compute_cams(net, x[2:3], ("gradcam", "eigencam"))
    for m in ("gradcam", "eigencam"):
        assert both[m].shape == (4, 16, 16)
        assert both[m].min() >= 0 and torch.allclose(both[m].flatten(1).amax(1), torch.ones(4))
        assert torch.allclose(both[m][2], one[m][0], atol=1e-5)
    assert torch.equal(both["targets"], both["logits"].argmax(1))


def test_index_gives_several_maps_per_image(net):
    x = torch.randn(2, 3, 16, 16)
    out = compute_cams(net, x, ("gradcam", "eigencam"), targets=torch.tensor([1, 3, 0]),
                       index=torch.tensor([0, 0, 1]))
    single = compute_cams(net, x[:1], ("gradcam",), targets=torch.tensor([3]))
    assert out["gradcam"].shape == (3, 16, 16)
    assert torch.allclose(out["gradcam"][1], single["gradcam"][0], atol=1e-5)
    assert torch.allclose(out["eigencam"][0], out["eigencam"][1])


def test_eigencam_is_the_first_principal_component():
    torch.manual_seed(1)
    n, c, h, w = 4, 32, 5, 5
    u, v = torch.rand(n, h * w), torch.rand(n, c)
    f = (3 * u[:, :, None] * v[:, None, :] + 0.2 * torch.rand(n, h * w, c)).transpose(1, 2).reshape(n, c, h, w)
    x = f.flatten(2).transpose(1, 2)
    x = x - x.mean(1, keepdim=True)
    pc = torch.linalg.svd(x, full_matrices=False).U[:, :, 0]
    sign = torch.sign(((pc - pc.mean(1, keepdim=True)) * f.mean(1).flatten(1)).sum(1))
    ref = _normalise((pc * sign[:, None]).reshape(n, h, w))
    assert torch.allclose(eigencam(f), ref, atol=1e-4)
    # more channels than positions and fewer: both Gram matrices give the same map
    assert torch.allclose(eigencam(f[:, :20]), eigencam(f[:, :20].contiguous()), atol=1e-6)


def test_scorecam_weights_are_a_softmax_over_channels(net):
    """Score-CAM by its definition, one image and one channel at a time: the k most active
    channels, each upsampled and min-max scaled into a mask, weighted by the softmax over the
    masked images' target logits."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    out = compute_cams(net, x, ("scorecam",), upsample_to_input=False, max_channels=4)
    assert out["scorecam"].shape == (2, 4, 4)
    assert torch.allclose(out["scorecam"].flatten(1).amax(1), torch.ones(2))
    with torch.no_grad():
        feats = net.forward_features(x)  # (2, 64, 4, 4)
        for n in range(2):
            target = int(out["targets"][n])
            channels = feats[n].mean((1, 2)).topk(4).indices
            scores = []
            for ch in channels:
                up = torch.nn.functional.interpolate(feats[n, ch][None, None], size=(16, 16), mode="bilinear",
                                                     align_corners=False)[0, 0]
                mask = (up - up.min()) / (up.max() - up.min())
                scores.append(net(x[n:n + 1] * mask)[0, target])
            weights = torch.stack(scores).softmax(0)
            ref = _normalise(torch.einsum("k,khw->hw", weights, feats[n, channels])[None])[0]
            assert torch.allclose(out["scorecam"][n], ref, atol=1e-5)


def test_no_layer_to_attach_to_is_a_user_error():
    with pytest.raises(UserError, match="no forward_features"):
        compute_cams(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(1, 3, 2, 2))

    class Tokens(nn.Module):
        def forward_features(self, x):
            return x.flatten(2).transpose(1, 2)  # (N, tokens, C): no spatial map

        def forward_head(self, x):
            return x.mean(1)

    with pytest.raises(UserError, match="not a 4-D feature map"):
        compute_cams(Tokens(), torch.randn(1, 3, 4, 4))


def test_unknown_method_names_the_valid_ones(net):
    with pytest.raises(UserError, match="gradcam"):
        compute_cams(net, torch.randn(1, 3, 8, 8), ("gradcan",))


def test_nhwc_feature_maps_are_supported():
    class NHWC(nn.Module):
        num_features = 6

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.fc = nn.Linear(6, 2)

        def forward_features(self, x):
            return self.conv(x).permute(0, 2, 3, 1)  # (N, H, W, C) as timm's Swin

        def forward_head(self, x):
            return self.fc(x.mean((1, 2)))

    m = NHWC().eval()
    x = torch.randn(2, 3, 5, 7)
    out = compute_cams(m, x, ("gradcam", "eigencam"), upsample_to_input=False)
    assert out["gradcam"].shape == (2, 5, 7) and out["feat_hw"] == (5, 7)
    feats = m.conv(x)
    ref = _normalise(torch.einsum("nc,nchw->nhw", m.fc.weight[out["targets"]] / 35, feats))
    assert torch.allclose(out["gradcam"], ref, atol=1e-5)
