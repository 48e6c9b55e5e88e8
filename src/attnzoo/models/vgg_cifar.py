"""VGG-16 for CIFAR as the Shift-and-Balance seed builds it (`utils.py`, `example.py`).

Four stages of 3x3 conv (with bias) + BatchNorm + ReLU, of 2, 2, 3, 3 layers and 64, 128, 256, 512
channels; after each stage an optional attention block, then 2x2 max pooling. The head is global
average pooling, Linear(512, 256), ReLU, Linear(256, num_classes) (the seed's reduced classifier).
(The seed's VGG has 13 convs in four stages, not VGG's usual five.)

- `vgg16_cifar`: no attention (the seed's baseline).
- `se_vgg16_cifar`: the SB seed's SE (`se_bn`: BatchNorm1d in the MLP, hidden int(rd_ratio·C)).
- `sb_vgg16_cifar`: Shift-and-Balance attention; `activation=` tanh (the seed's default) | sigmoid
  | relu | softmax | linear and `rd_ratio=` (default 0.5; the deprecated `ratio=` still works).

Initialisation as in the seed's `example.py` (`model.apply(weights_init)`): every Linear and
BatchNorm1d weight from N(0, 0.02), biases 0; convolutions and BatchNorm2d keep PyTorch's defaults.
Any attention block works (`attn=`, `attn_kwargs=`). Unlike the seed, the head flattens instead of
squeezing, so batch size 1 works.

The head pools early: global pooling comes before the MLP (Linear 512->256, ReLU), so
`global_pool` sets the MLP's input width (catavgmax doubles it; changing the width by
`reset_classifier` builds a new MLP), and `global_pool=''` removes both pooling and MLP (unpooled
features; only with num_classes=0; a later `reset_classifier(n)` with classes brings back 'avg'
pooling and the MLP). `head_hidden_size` is the MLP's 256.

Input (N, in_chans, H, W) -> logits (N, num_classes); H, W multiples of 16 (32 for CIFAR).
Features (`features_only`, `forward_intermediates`): each stage's output (after its attention,
before its max pool) at strides 1, 2, 4, 8, then the final max pool (the `forward_features`
output) at 16, as timm's VGG.
"""
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import generate_default_cfgs
from torch import nn

from ..errors import UserError
from ..layers.factory import get_attn
from ._base import AttnzooNet, check_pool
from ._registry import build, register
from .resnet_cifar import cifar_cfg

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3))
HIDDEN = 256

default_cfgs = generate_default_cfgs({
    name: cifar_cfg("Shift-and-Balance Attention (arXiv 2103.13080)",
                    "https://github.com/yuranusduke/Shift_and_Balance_Attention", "mit",
                    pool_size=(2, 2), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),  # example.py's
                    first_conv="stages.0.0")
    for name in ("vgg16_cifar", "se_vgg16_cifar", "sb_vgg16_cifar")})


class VggCifar(AttnzooNet):
    """The SB seed's VGG-16 with an attention slot after each of its four stages."""

    def __init__(self, num_classes=10, in_chans=3, attn=None, attn_kwargs=None, init_std=0.02,
                 drop_rate=0.0, global_pool="avg"):
        super().__init__()
        attn_layer = get_attn(attn, **(attn_kwargs or {}))
        stages, attns, cin = [], [], in_chans
        for width, repeat in STAGES:
            layers = []
            for _ in range(repeat):
                layers += [nn.Conv2d(cin, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                cin = width
            stages.append(nn.Sequential(*layers))
            attns.append(attn_layer(width) if attn_layer else nn.Identity())
        self.stages = nn.ModuleList(stages)
        self.attns = nn.ModuleList(attns)
        self.pools = nn.ModuleList(nn.MaxPool2d(2, 2) for _ in STAGES)  # one each: distinct FX nodes
        self.feature_info = [dict(num_chs=w, reduction=2 ** i, module=f"attns.{i}")
                             for i, (w, _) in enumerate(STAGES)] + [dict(num_chs=512, reduction=16, module="pools.3")]
        self.stage_modules = [(f"stages.{i}", f"attns.{i}") for i in range(len(STAGES))] + [("pools.3",)]
        self.init_std = None  # the seed's init is applied once, to the whole network, below
        self.pre_logits = None
        self._init_head(512, num_classes, global_pool, drop_rate)
        self.init_std = init_std
        if init_std is not None:
            self.apply(self._init)

    def _init(self, m):
        if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 0.0, self.init_std)
            nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        """A new `fc` (and, where the pooled width changes, a new MLP); see the module docstring."""
        pool = check_pool(global_pool if global_pool is not None else self.global_pool.pool_type)
        if global_pool is None and not pool and num_classes:  # the MLP needs pooled features
            pool = "avg"
        if not pool and num_classes:
            raise UserError("VGG: global_pool='' removes the MLP head, so it needs num_classes=0")
        place = self._placement()
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=pool, flatten=bool(pool))
        width = self.num_features * self.global_pool.feat_mult()
        if not pool:
            self.pre_logits = nn.Identity()
        elif not isinstance(self.pre_logits, nn.Sequential) or self.pre_logits[0].in_features != width:
            self.pre_logits = self._initialised(nn.Sequential(nn.Linear(width, HIDDEN), nn.ReLU(inplace=True)))
        self.head_hidden_size = HIDDEN if pool else self.num_features
        self.fc = self._initialised(nn.Linear(HIDDEN, num_classes)) if num_classes else nn.Identity()
        place(self.global_pool, self.pre_logits, self.fc)

    def _initialised(self, module: nn.Module) -> nn.Module:
        if self.init_std is not None:
            module.apply(self._init)
        return module

    def _stage(self, i: int):
        stage, attn = self.stages[i], self.attns[i]
        return (lambda x: attn(stage(x))) if i == 0 else (lambda x: attn(stage(self.pools[i - 1](x))))

    def _stages(self):
        return [self._stage(i) for i in range(len(STAGES))] + [self.pools[-1]]

    def forward_features(self, x):
        """(N, in_chans, H, W) -> (N, 512, H/16, W/16)."""
        if (self.grad_checkpointing or self.pruned) and not torch.jit.is_scripting():
            return self.forward_intermediates(x, indices=1)[0]  # checkpointed or pruned: stage by stage
        for stage, attn, pool in zip(self.stages, self.attns, self.pools):  # noqa: B905 - TorchScript has no strict=
            x = pool(attn(stage(x)))
        return x

    def forward_head(self, x, pre_logits: bool = False):
        """(N, 512, h, w) -> (N, 256) hidden features if pre_logits else (N, num_classes)."""
        x = self.pre_logits(self.global_pool(x))
        if self.drop_rate:
            x = nn.functional.dropout(x, float(self.drop_rate), self.training)
        return x if pre_logits else self.fc(x)


def _attn_model(name, attn, pretrained, kwargs, **seed):
    """Model options `rd_ratio` (or the deprecated `ratio`)/`activation` go to the attention block unless
    another block is asked."""
    opts = {k: kwargs.pop(k) for k in (*seed, "ratio") if k in kwargs}
    user = kwargs.pop("attn_kwargs", None) or {}
    attn_kwargs = {**seed, **opts, **user} if kwargs.get("attn", attn) == attn else user
    return build(VggCifar, name, pretrained, kwargs, attn=attn, attn_kwargs=attn_kwargs)


@register
def vgg16_cifar(pretrained=False, **kwargs):
    """The SB seed's VGG-16 baseline (no attention): 7.77M params at 10 classes."""
    return build(VggCifar, "vgg16_cifar", pretrained, kwargs)


@register
def se_vgg16_cifar(pretrained=False, **kwargs):
    """The SB seed's VGG-16 with its SE (BatchNorm MLP) after each stage; `rd_ratio=` (0.5)."""
    return _attn_model("se_vgg16_cifar", "se_bn", pretrained, kwargs, rd_ratio=0.5)


@register
def sb_vgg16_cifar(pretrained=False, **kwargs):
    """The SB seed's VGG-16 with Shift-and-Balance after each stage; `activation=`, `rd_ratio=`."""
    return _attn_model("sb_vgg16_cifar", "sb", pretrained, kwargs, rd_ratio=0.5, activation="tanh")
