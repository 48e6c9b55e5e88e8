"""Family attention recorded by hooks: channel gates, SAN / LESA spatial attention, IDA maps."""
import pytest
import torch
from torch import nn

from attnzoo.analysis.cam import compute_cams
from attnzoo.analysis.family import (
    AttentionRecorder,
    attention_at_pixels,
    check_pixels,
    class_spatial_maps,
    stage_of,
    summarize_gates,
)
from attnzoo.errors import UserError
from attnzoo.models.resnet_cifar import CifarResNet


class Toy(nn.Module):
    """stem (stride 2) -> attention block -> GAP + linear: a network with `forward_features`."""

    def __init__(self, block: nn.Module, channels: int = 8, classes: int = 4):
        super().__init__()
        self.num_features = channels
        self.stem = nn.Conv2d(3, channels, 3, 2, 1)
        self.block = block
        self.fc = nn.Linear(channels, classes)

    def forward_features(self, x):
        return self.block(self.stem(x))

    def forward_head(self, x, pre_logits=False):
        return self.fc(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("block", ["se", "lsas", "sb", "timm_eca"])
def test_channel_gates_of_every_block(block):
    from attnzoo.layers.lsas import LSAS
    from attnzoo.layers.se import SE
    from attnzoo.layers.shift_balance import ShiftBalance

    make = {"se": lambda c: SE(c, rd_ratio=0.25), "lsas": lambda c: LSAS(c, order=2, rd_ratio=0.25),
            "sb": lambda c: ShiftBalance(c), "timm_eca": "eca"}[block]
    torch.manual_seed(0)
    net = CifarResNet(depth=8, attn=make, num_classes=3).eval()
    x = torch.randn(5, 3, 16, 16)
    with AttentionRecorder(net) as rec, torch.no_grad():
        net(x)
    assert sorted(rec.records) == ["layer1.0.attn", "layer2.0.attn", "layer3.0.attn"]
    g = rec.records["layer2.0.attn"]["tensors"][0]
    assert g.shape == (5, 32)
    attn = net.layer2[0].attn
    inp = {}
    h = attn.register_forward_pre_hook(lambda m, a: inp.setdefault("x", a[0]))
    with torch.no_grad():
        y = net.layer2(net.layer1(net.relu(net.bn1(net.conv1(x)))))  # noqa: F841
    h.remove()
    with torch.no_grad():
        out = attn(inp["x"])
    if block == "sb":  # y = x + shift
        assert torch.allclose(out, inp["x"] + g[:, :, None, None], atol=1e-5)
    else:  # y = x * gate
        assert torch.allclose(out, inp["x"] * g[:, :, None, None], atol=1e-5)
    # hooks are gone after the context
    with torch.no_grad():
        net(x)
    assert len(rec.records["layer2.0.attn"]["tensors"]) == 1
    s = summarize_gates({k: r["tensors"][0] for k, r in rec.records.items()},
                        torch.tensor([0, 1, 2, 0, 1]), 3)
    assert set(s["stages"]) == {"layer1", "layer2", "layer3"}
    assert 0 <= s["stages"]["layer3"]["class_selectivity"] <= 1


def test_stage_names():
    assert stage_of("layer2.3.attn") == "layer2"
    assert stage_of("stages.1.blocks.0.se") == "stages.1"
    assert stage_of("features.10.se") == "features.10"


def test_class_selectivity_extremes():
    labels = torch.tensor([0, 0, 1, 1])
    by_class = torch.tensor([[0.1], [0.1], [0.9], [0.9]])
    random = torch.tensor([[0.1], [0.9], [0.1], [0.9]])
    s = summarize_gates({"a.attn": by_class, "b.attn": random}, labels, 2)["modules"]
    assert s["a.attn"]["class_selectivity"] == pytest.approx(1.0)
    assert s["b.attn"]["class_selectivity"] == pytest.approx(0.0)


def test_san_local_attention_at_pixels():
    from attnzoo.layers.san import SAM

    torch.manual_seed(0)
    net = Toy(SAM("pairwise", 8, 2, 8, 4, kernel_size=3)).eval()
    x = torch.randn(6, 3, 16, 16)
    rec = AttentionRecorder(net)
    with rec:
        out = compute_cams(net, x, ("gradcam",), recorder=rec)
    r = rec.records["block"]
    assert r["kind"] == "local" and r["tensors"][0].shape == (4, 2, 9, 64)  # first 4 images only
    assert len(r["tensors"]) == 1  # Grad-CAM's head pass is not recorded
    items = attention_at_pixels(rec.records, check_pixels([(2, 5)], out["feat_hw"]), out["feat_hw"])
    assert items[0]["pixel"] == (2, 5) and items[0]["map"].shape == (3, 3)
    with torch.no_grad():
        ref = net.block.attention_weights(net.stem(x[:1]))  # (1, 2, 9, 64)
    assert torch.allclose(items[0]["map"], ref[0, :, :, 2 * 8 + 5].mean(0).reshape(3, 3), atol=1e-6)
    assert torch.allclose(items[0]["map"].sum(), torch.tensor(1.0), atol=1e-5)  # softmax over k*k


def test_lesa_global_attention_matches_the_reference_path(monkeypatch):
    from attnzoo.layers.lesa import LESA

    torch.manual_seed(0)
    block = LESA(16, fmap_size=4, groups=2, impl="reference").eval()
    x = torch.randn(2, 16, 4, 4)
    captured = []
    real = torch.nn.functional.softmax
    monkeypatch.setattr(torch.nn.functional, "softmax",
                        lambda t, dim=None, **kw: captured.append(real(t, dim=dim, **kw)) or captured[-1])
    with AttentionRecorder(block) as rec, torch.no_grad():
        block(x)
    monkeypatch.undo()
    p = rec.records[""]["tensors"][0]
    assert p.shape == (2, 2, 16, 16)
    assert torch.allclose(p, captured[-1], atol=1e-5)
    items = attention_at_pixels(rec.records, [(1, 2)], (4, 4))
    assert items[0]["kind"] == "global" and items[0]["map"].shape == (4, 4)


def test_ida_class_spatial_attention():
    from attnzoo.layers.intervention import InterventionalClassifier

    class IDAToy(Toy):
        def forward_head(self, x, pre_logits=False):
            return self.head(x)

    torch.manual_seed(0)
    net = IDAToy(nn.Identity())
    net.head = InterventionalClassifier(8, 5, num_heads=2, heavy=False)
    net.eval()
    x = torch.randn(3, 3, 16, 16)
    rec = AttentionRecorder(net)
    with rec:
        out = compute_cams(net, x, ("gradcam",), recorder=rec)
    maps = class_spatial_maps(rec.records, out["targets"], out["feat_hw"])
    assert maps.shape == (3, 8, 8) and torch.allclose(maps.flatten(1).amax(1), torch.ones(3))
    ref = net.head.attention_maps(net.forward_features(x)).mean(1)  # (3, K, 8, 8)
    ref = ref[torch.arange(3), out["targets"]]
    assert torch.allclose(maps, ref / ref.flatten(1).amax(1)[:, None, None], atol=1e-5)


def test_any_module_with_attention_kind_and_attention_weights_is_recorded():
    class Uniform(nn.Module):
        attention_kind = "global"

        def attention_weights(self, x):
            n, c, h, w = x.shape
            return torch.full((n, 1, h * w, h * w), 1.0 / (h * w))

        def forward(self, x):
            return x

    net = Toy(Uniform())
    with AttentionRecorder(net) as rec, torch.no_grad():
        net(torch.randn(6, 3, 8, 8))
    assert rec.records["block"]["kind"] == "global"
    assert rec.records["block"]["tensors"][0].shape == (4, 1, 16, 16)  # MAX_SPATIAL_SAMPLES images


def test_blocks_inserted_by_add_attention_are_found():
    import torchvision

    from attnzoo import add_attention

    torch.manual_seed(0)
    net, report = add_attention(torchvision.models.resnet18(num_classes=3), "lsas_se", stages=[3, 4])
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with AttentionRecorder(net) as rec, torch.no_grad():
        net(x)
    assert sorted(rec.records) == sorted(report.modules) == ["layer3.0.bn2.attn", "layer3.1.bn2.attn",
                                                             "layer4.0.bn2.attn", "layer4.1.bn2.attn"]
    gates = {n: r["tensors"][0] for n, r in rec.records.items()}
    summary = summarize_gates(gates, torch.tensor([0, 1]), 3)
    assert list(summary["stages"]) == ["layer3", "layer4"] and summary["stages"]["layer4"]["modules"] == 2
    inp = {}
    block = net.layer4[1].bn2.attn
    block.register_forward_pre_hook(lambda m, a: inp.setdefault("x", a[0]))
    with torch.no_grad():
        net(x)
        assert torch.allclose(block(inp["x"]), inp["x"] * gates["layer4.1.bn2.attn"][:, :, None, None])


@pytest.mark.parametrize("pixel", [(4, 0), (0, -1), ("a", 1)])
def test_pixel_outside_the_feature_map(pixel):
    with pytest.raises(UserError, match="feature map"):
        check_pixels([pixel], (4, 4))
