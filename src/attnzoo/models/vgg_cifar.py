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

Input (N, 3, H, W) -> logits (N, num_classes); H, W multiples of 16 (32 for CIFAR).
"""
from torch import nn

from ..layers.factory import block_factory
from ._registry import build, register

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3))


class VggCifar(nn.Module):
    """The SB seed's VGG-16 with an attention slot after each of its four stages."""

    def __init__(self, num_classes=10, in_chans=3, attn=None, attn_kwargs=None, init_std=0.02,
                 drop_rate=0.0):
        super().__init__()
        attn_layer = block_factory(attn, **(attn_kwargs or {}))
        self.num_classes = num_classes
        self.drop_rate = drop_rate
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
        self.pool = nn.MaxPool2d(2, 2)
        self.num_features = 512
        self.head_hidden_size = 256
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = nn.Sequential(nn.Linear(512, 256), nn.ReLU(inplace=True))
        self.fc = nn.Linear(256, num_classes) if num_classes else nn.Identity()
        self.init_std = init_std
        if init_std is not None:
            self.apply(self._init)

    def _init(self, m):
        if isinstance(m, (nn.Linear, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 0.0, self.init_std)
            nn.init.zeros_(m.bias)

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        self.fc = nn.Linear(256, num_classes) if num_classes else nn.Identity()
        if num_classes and self.init_std is not None:
            self._init(self.fc)

    def forward_features(self, x):
        """(N, 3, H, W) -> (N, 512, H/16, W/16)."""
        for stage, attn in zip(self.stages, self.attns):
            x = self.pool(attn(stage(x)))
        return x

    def forward_head(self, x, pre_logits: bool = False):
        """(N, 512, h, w) -> (N, 256) hidden features if pre_logits else (N, num_classes)."""
        x = self.pre_logits(self.global_pool(x).flatten(1))
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


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
