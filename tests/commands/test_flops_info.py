"""FLOP/MAC counting (custom operators included) and `model_info` / `format_info`."""
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import register_flop_formula

import attnzoo  # noqa: F401  (registers the networks)
from attnzoo.commands.info import default_img_size, describe, format_info, model_info
from attnzoo.engine.flops import count_flops, human
from attnzoo.errors import UserError


@torch.library.custom_op("attnzoo_test_flops::scale_counted", mutates_args=())
def _scale_counted(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * w


@_scale_counted.register_fake
def _(x, w):
    return torch.empty_like(x)


@register_flop_formula(torch.ops.attnzoo_test_flops.scale_counted)
def _scale_flops(x_shape, w_shape, out_shape=None, **kwargs):
    return 2 * math.prod(out_shape)  # one multiply-add per output element


@torch.library.custom_op("attnzoo_test_flops::scale_uncounted", mutates_args=())
def _scale_uncounted(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * w


class _Tiny(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        self.w = nn.Parameter(torch.ones(3, 4, 4))
        self.conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        x = self.conv(self.op(x, self.w))
        return self.fc(x.mean((2, 3)))


def test_conv_and_linear_macs_are_exact():
    out = count_flops(_Tiny(lambda x, w: x * w), (2, 3, 4, 4), per_module=["conv", "fc"])
    conv_macs = 2 * 5 * 4 * 4 * 3 * 3 * 3  # batch * out ch * H * W * in ch * k * k
    fc_macs = 2 * 5 * 2
    assert out["macs"] == conv_macs + fc_macs and out["flops"] == 2 * out["macs"]
    assert out["per_module"] == {"conv": conv_macs, "fc": fc_macs}
    assert out["uncounted_ops"] == []


def test_custom_op_with_registered_formula_is_counted():
    base = count_flops(_Tiny(lambda x, w: x * w), (2, 3, 4, 4))["macs"]
    counted = count_flops(_Tiny(torch.ops.attnzoo_test_flops.scale_counted), (2, 3, 4, 4))
    assert counted["macs"] == base + 2 * 3 * 4 * 4
    assert counted["uncounted_ops"] == []


def test_custom_op_without_formula_is_reported():
    out = count_flops(_Tiny(torch.ops.attnzoo_test_flops.scale_uncounted), (1, 3, 4, 4))
    assert out["uncounted_ops"] == ["attnzoo_test_flops.scale_uncounted"]


def test_count_restores_training_mode_and_rejects_bad_input():
    model = _Tiny(lambda x, w: x * w).train()
    count_flops(model, (1, 3, 4, 4))
    assert model.training
    with pytest.raises(UserError, match="expected \\(N, C, H, W\\)"):
        count_flops(model, (3, 4, 4))
    with pytest.raises(UserError, match="does not run on input"):
        count_flops(model, (1, 4, 4, 4))


def test_model_info_resnet20_cifar():
    info = model_info("resnet20_cifar")
    assert info["input_size"] == [1, 3, 32, 32] and info["num_classes"] == 10
    assert info["params"] == info["trainable_params"] == 272_474
    # ResNet-20 on 32 px: 40.8M multiply-adds (the figure usually quoted as "41M FLOPs").
    assert 40.5e6 < info["macs"] < 41.1e6 and info["flops"] == 2 * info["macs"]
    names = [r["name"] for r in info["stages"]]
    assert names[:3] == ["conv1", "bn1", "relu"] and "layer3" in names
    by_name = {r["name"]: r for r in info["stages"]}
    assert by_name["layer2"]["output_shape"] == [1, 32, 16, 16]
    assert by_name["fc"]["output_shape"] == [1, 10]
    assert sum(r["params"] for r in info["stages"]) == info["params"]
    assert sum(r["macs"] for r in info["stages"]) == info["macs"]
    text = format_info(info)
    assert "resnet20_cifar" in text and "layer2" in text and "(1, 32, 16, 16)" in text
    assert "40.81M" in text


def test_model_info_options_and_timm_stage_containers():
    info = model_info("resnet20_cifar", img_size=16, num_classes=3, model_kwargs={"in_chans": 1})
    assert info["input_size"] == [1, 1, 16, 16] and info["num_classes"] == 3
    small = model_info("resnet20_cifar", img_size=16)["macs"]
    assert abs(model_info("resnet20_cifar", img_size=32)["macs"] / small - 4) < 0.01
    info = model_info("convnext_atto", img_size=32, num_classes=4)  # timm: stages opened up
    assert [r["name"] for r in info["stages"] if r["name"].startswith("stages.")] == \
        ["stages.0", "stages.1", "stages.2", "stages.3"]


def test_default_img_size_and_bad_values():
    assert default_img_size("resnet20_cifar") == 32
    assert default_img_size("mobilenetv3_small_050", attnzoo.create_model("mobilenetv3_small_050")) == 224
    with pytest.raises(UserError, match="unknown model"):
        model_info("resnet20_cifarr")
    with pytest.raises(UserError, match="img_size"):
        model_info("resnet20_cifar", img_size=0)
    with pytest.raises(UserError, match="num_classes"):
        model_info("resnet20_cifar", num_classes=0)


def test_human():
    assert human(4.1e9) == "4.10G" and human(272_474) == "272.47K" and human(640) == "640"


class _Shared(nn.Module):
    """A ReLU called twice, a child never called, and a parameter of the root itself."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.act = nn.ReLU()
        self.unused = nn.Linear(2, 2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.act(self.act(self.conv(x)) * self.scale)


def test_describe_shared_unused_and_own_parameters():
    info = describe(_Shared(), (1, 3, 5, 5))
    rows = {r["name"]: r for r in info["stages"]}
    assert rows["act"]["calls"] == 2 and rows["act"]["output_shape"] == [1, 4, 5, 5]
    assert rows["unused"]["calls"] == 0 and rows["unused"]["output_shape"] is None
    assert rows["(own parameters)"]["params"] == 1
    assert info["params"] == 12 + 6 + 1 and info["macs"] == 12 * 25
    text = format_info(info)
    assert "x2 calls" in text and "(own parameters)" in text


def test_san_operators_are_counted():
    """attnzoo.ops registers FLOP formulas for its custom operators; aggregation is k*k
    multiply-adds per output element, as in the official SAN complexity count."""
    ops = pytest.importorskip("attnzoo.ops")
    if not hasattr(ops, "aggregation"):
        pytest.skip("attnzoo.ops.aggregation is not there")

    class Agg(nn.Module):
        def forward(self, x):
            n, c, h, w = x.shape
            weight = torch.ones(n, c // 2, 9, h * w)  # share 2: C/2 weight channels
            return ops.aggregation(x, weight, 3, 1, 1, backend="torch")

    out = count_flops(Agg(), (2, 4, 6, 6))
    assert out["macs"] == 2 * 4 * 9 * 6 * 6 and out["uncounted_ops"] == []


def test_model_info_shows_the_cost_of_inserted_blocks():
    info = model_info("resnet20_cifar+lsas_se", num_classes=4)
    bare = model_info("resnet20_cifar", num_classes=4)
    ins = info["inserted"]
    assert ins["host"] == "resnet20_cifar" and ins["block"] == "lsas_se"
    assert ins["params"] == info["params"] - bare["params"] > 0
    assert ins["macs"] == info["macs"] - bare["macs"] > 0
    assert abs(ins["params_pct"] - 100 * ins["params"] / bare["params"]) < 1e-9
    assert f"inserted lsas_se against the bare resnet20_cifar: +{ins['params'] / 1e3:.2f}K params" \
        in format_info(info)
    assert "inserted" not in bare
