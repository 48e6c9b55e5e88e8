"""`attnzoo info` on the nine rows of the SAN seed's table (hszhao/SAN README, "Overall result"):
parameters to the table's digit, and its "Flops" column, which is the official counter's count
(multiply-adds + element-wise work, `macs_elementwise`), to 0.05G and to the table's rounding.
Built on the meta device: the counts need shapes only."""
import pytest
import torch
from torch import nn

import attnzoo
from attnzoo.cli import main
from attnzoo.commands.info import describe
from attnzoo.engine.flops import count_flops

TABLE = {  # name: (params M, GFlops)
    "san_resnet26": (13.7, 2.4), "san10_pairwise": (10.5, 2.2), "san10_patchwise": (11.8, 1.9),
    "san_resnet38": (19.6, 3.2), "san15_pairwise": (14.1, 3.0), "san15_patchwise": (16.2, 2.6),
    "san_resnet50": (25.6, 4.1), "san19_pairwise": (17.6, 3.8), "san19_patchwise": (20.5, 3.3),
}


@pytest.mark.parametrize("name", TABLE)
def test_info_gives_the_tables_params_and_flops(name):
    params, gflops = TABLE[name]
    with torch.device("meta"):
        model = attnzoo.create_model(name)
    info = describe(model, (1, 3, 224, 224))
    assert round(info["params"] / 1e5) / 10 == params
    counted = info["macs_elementwise"] / 1e9
    assert abs(counted - gflops) < 0.05 and round(counted, 1) == gflops
    assert info["macs"] < info["macs_elementwise"] and not info["uncounted_ops"]


def test_info_command_prints_both_counts(capsys):
    assert main(["info", "san_resnet26"]) == 0
    out = capsys.readouterr().out
    assert "MACs 2.34G per image" in out and "MACs + element-wise 2.36G per image" in out
    assert "13,696,552" in out


class _Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)            # bias: 1 per output element
        self.bn = nn.BatchNorm2d(4)                          # affine: 2 per input element
        self.bn_plain = nn.BatchNorm2d(4, affine=False)      # 1 per input element
        self.relu = nn.ReLU()                                # 1 per output element, per call
        self.pool = nn.MaxPool2d(2)                          # 1 per input element
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)                            # multiply-adds only, no bias term

    def forward(self, x):                                    # (2, 3, 8, 8)
        x = self.relu(self.bn(self.conv(x)))                 # (2, 4, 8, 8)
        x = self.relu(self.bn_plain(self.pool(x)))           # (2, 4, 4, 4)
        return self.fc(self.gap(x).flatten(1)) + torch.relu(x).mean()  # functional relu: not counted


def test_elementwise_terms_as_the_official_counter_counts_them():
    model = _Elementwise()
    got = count_flops(model, (2, 3, 8, 8))
    conv, fc = 2 * 4 * 8 * 8 * 3 * 3 * 3, 2 * 3 * 4
    assert got["macs"] == conv + fc
    big, small = 2 * 4 * 8 * 8, 2 * 4 * 4 * 4
    extra = big + 2 * big + big + big + small + small + small  # bias, bn, relu, pool, bn_plain, relu, gap
    assert got["macs_elementwise"] == conv + fc + extra
    assert not any(m._forward_hooks for m in model.modules())  # the counting hooks are gone
