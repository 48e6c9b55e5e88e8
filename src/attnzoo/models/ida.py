"""IDA networks for multi-label recognition: any timm or attnzoo backbone + the interventional
classifier (`attnzoo.layers.intervention`), and the plain baseline (global average pooling +
linear) on the same backbones.

Names:
- `ida`: the IDA head on `backbone=<any timm or attnzoo model name>` (default resnet101).
- `ida_resnet101` (paper "IDA-R101(H)": 4 heads, heavy), `ida_resnet101_light` ("(L)": one light
  layer), `ida_resnet50`; all with the paper's per-head normalisation and head tokens.
- `ida_resnet101_official`: the same network with the two behaviours of the official code
  (`logit_norm="last_head"`, `token_layout="interleaved"`); official checkpoints converted with
  `attnzoo convert --from ida-official` give the official outputs in it.
- `mlc_baseline`: global average pooling + linear on `backbone=` (default resnet101), the
  "ResNet-101" row of the paper's tables.

The paper trains at 448 x 448; the networks take any input size (pooling is global).
Input (N, 3, H, W) -> logits (N, num_classes) (apply a sigmoid for per-label probabilities).

Weights come from a local file, the timm way (`pretrained=True,
pretrained_cfg_overlay=dict(file=PATH)`; `model.pretrained` in a recipe): either a whole network
of the same name, or the backbone's ImageNet weights (a torchvision or timm state dict) whose
classifier is dropped and whose other keys must fit the backbone exactly, otherwise a `UserError`
names the missing and unexpected keys. Nothing is downloaded.

Features (`features_only`, `forward_intermediates`): the backbone's (for a ResNet, its stem and
four stages at strides 2-32). `forward_head(x, pre_logits=True)` is the globally pooled feature
(what the network returns after `reset_classifier(0)`); the IDA head's class features are
`model.head(x, pre_logits=True)`.
"""
from __future__ import annotations

import sys

import timm
import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d, register_notrace_function
from timm.models import generate_default_cfgs
from torch import nn

from ..errors import UserError
from ..layers.intervention import InterventionalClassifier
from ..weights import describe_mismatch, state_mismatch
from ._base import AttnzooNet, check_pool
from ._registry import build, cfg, check_registered, register, same_keys

HEADS = ("ida", "linear")
IDA_PAPER = "Causality Compensated Attention for Contextual Biased Visual Recognition (ICLR 2023)"
IDA_REPO = "https://github.com/yu-gi-oh-leilei/IDA_2023ICLR"

# COCO at 448 px, resized without cropping, ImageNet statistics (the official data pipeline).
default_cfgs = generate_default_cfgs({
    name: cfg(IDA_PAPER, IDA_REPO, "unknown", num_classes=80, input_size=(3, 448, 448),
              pool_size=(14, 14), crop_pct=1.0, first_conv="backbone.conv1", classifier="head")
    for name in ("ida", "ida_resnet50", "ida_resnet101", "ida_resnet101_light", "ida_resnet101_official",
                 "mlc_baseline")})


# ------------------------------------------------------------------------------ weights

def fit_backbone_state(backbone: nn.Module, state: dict, name: str) -> dict:
    """ImageNet weights fitted to a classifier-less backbone, strictly (see the module docstring)."""
    own = backbone.state_dict()
    classifier = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier") or "fc"
    prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    candidates = [state]
    filter_fn = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:  # timm's converter from the original/torchvision layout
        try:
            candidates.append(filter_fn(dict(state), backbone))
        except Exception:  # noqa: BLE001 - a file of another architecture
            pass
    best = None
    for cand in candidates:
        cand = {k: v for k, v in cand.items() if k in own or not k.startswith(prefixes)}
        for k in own:  # old torchvision files have no BatchNorm step counter
            if k.endswith("num_batches_tracked") and k not in cand:
                cand[k] = own[k]
        result = state_mismatch(own, cand)
        if best is None or sum(map(len, result)) < sum(map(len, best[1])):
            best = (cand, result)
        if not any(result):
            return cand
    raise UserError(f"pretrained file does not fit backbone '{name}' (wrong architecture?): "
                    + describe_mismatch(*best[1], shown=4))


def ida_weights(state: dict, model: "IDANet") -> dict:
    """timm's `pretrained_filter_fn`: a whole network as it is, or backbone weights completed
    with the network's own head."""
    if any(k.startswith("backbone.") for k in state):
        return same_keys(state, model)
    backbone = fit_backbone_state(model.backbone, state, model.backbone_name)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    return {**{f"backbone.{k}": v for k, v in backbone.items()}, **own}


def create_backbone(name: str, **kwargs) -> nn.Module:
    """A classifier-less timm or attnzoo network whose `forward_features` gives the feature map."""
    check_registered(name, "backbone")
    if name.startswith(("ida", "mlc_baseline")):
        raise UserError(f"backbone '{name}' is itself a multi-label network; name a feature extractor")
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    except TypeError as e:
        raise UserError(f"backbone '{name}': {e}") from None


# ----------------------------------------------------------------------------------- the network

# A leaf for FX (the layout test is not traced as data): timm's registration for timm's
# extractors, and torch.fx.wrap because the caller is a method outside the traced forward's module
# (timm only patches functions in the globals of the code it traces).
@register_notrace_function
@torch.fx.wrap
def to_nchw(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """A backbone's feature output as (N, D, h, w); token outputs (N, L, D) become (N, D, 1, L)."""
    if x.dim() == 3:
        return x.transpose(1, 2).unsqueeze(2)
    if fmt == "NHWC":
        return x.permute(0, 3, 1, 2)
    return x


class IDANet(AttnzooNet):
    """Backbone + IDA head (`head="ida"`) or global pooling + linear (`head="linear"`).

    Args:
        backbone: timm or attnzoo model name; built without classifier and without downloads.
        num_classes: number of labels.
        head: "ida" or "linear".
        num_heads, heavy, beta, ffn_dim, logit_norm, token_layout: the IDA head's options
            (`attnzoo.layers.intervention.InterventionalClassifier`).
        backbone_kwargs: extra constructor options of the backbone.
        freeze_backbone: backbone parameter-name prefixes to keep fixed, e.g. ["conv1", "bn1",
            "layer1"] as the official code (DETR-style: only layer2-4 of a ResNet train).
        drop_rate: dropout on the pooled features (before the linear head; not the IDA head's).
        in_chans: input channels (the backbone's).
        global_pool: the pooling of the linear head and of `pre_logits` (the IDA head pools by
            class attention).

    forward_features: (N, in_chans, H, W) -> (N, num_features, h, w); forward_head -> (N, num_classes).
    """

    def __init__(self, backbone: str = "resnet101", num_classes: int = 80, head: str = "ida",
                 num_heads: int = 4, heavy: bool = True, beta: float = 1.0 / 32, ffn_dim: int = 2048,
                 logit_norm: str = "per_head", token_layout: str = "head",
                 backbone_kwargs: dict | None = None, freeze_backbone=(), drop_rate: float = 0.0,
                 in_chans: int = 3, global_pool: str = "avg"):
        super().__init__()
        if head not in HEADS:
            raise UserError(f"head '{head}' is not valid; valid: {', '.join(HEADS)}")
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        self.backbone_fmt = "NHWC" if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC" else "NCHW"
        self._freeze(freeze_backbone)
        self.feature_info = [dict(info, module=f"backbone.{info['module']}")
                             for info in getattr(self.backbone, "feature_info", [])]
        self.head_type = head
        self._head_kwargs = dict(num_heads=num_heads, heavy=heavy, beta=beta, ffn_dim=ffn_dim,
                                 logit_norm=logit_norm, token_layout=token_layout)
        self._init_head(self.backbone.num_features, num_classes, global_pool, drop_rate)

    def _freeze(self, prefixes) -> None:
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        names = [n for n, _ in self.backbone.named_parameters()]
        for prefix in prefixes:
            hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
            if not hits:
                tops = sorted({n.split(".")[0] for n in names})
                raise UserError(f"freeze_backbone: '{prefix}' names no parameter of backbone "
                                f"'{self.backbone_name}'; its top-level modules: {', '.join(tops)}")
            for n, p in self.backbone.named_parameters():
                if n in hits:
                    p.requires_grad_(False)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        pool = check_pool(global_pool if global_pool is not None else self.global_pool.pool_type)
        place = self._placement()
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=pool, flatten=bool(pool))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.attention_head = self.head_type == "ida" and num_classes > 0
        if not num_classes:
            self.head = nn.Identity()
        elif self.attention_head:
            self.head = InterventionalClassifier(self.num_features, num_classes, **self._head_kwargs)
        else:
            self.head = nn.Linear(self.head_hidden_size, num_classes)
        place(self.global_pool, self.head)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, h, w)."""
        return to_nchw(self.backbone.forward_features(x), self.backbone_fmt)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, D, h, w) -> logits (N, C); pre_logits: the globally pooled features."""
        if self.attention_head and not pre_logits:
            return self.head(x)
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, float(self.drop_rate), self.training)
        return x if pre_logits else self.head(x)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """IDA's class-specific spatial attention, (N, 3, H, W) -> (N, heads, C, h, w)."""
        if not isinstance(self.head, InterventionalClassifier):
            raise UserError("attention_maps needs the IDA head (head='ida')")
        return self.head.attention_maps(self.forward_features(x))

    # The feature interface is the backbone's.

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        if not hasattr(self.backbone, "forward_intermediates"):
            raise UserError(f"backbone '{self.backbone_name}' has no forward_intermediates")
        out = self.backbone.forward_intermediates(x, indices=indices, norm=norm, stop_early=stop_early,
                                                  output_fmt=output_fmt, intermediates_only=intermediates_only)
        return out if intermediates_only else (to_nchw(out[0], self.backbone_fmt), out[1])

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        """The backbone's stages after the last of `indices` go (the backbone never has a head);
        the IDA/linear head goes with `prune_head`, or when the features end before the last stage
        (the head is sized for those)."""
        take = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=True)
        if prune_head or max(take) < len(self.feature_info) - 1:
            self.num_features = self.backbone.num_features
            self.reset_classifier(0, "")
        return take


# ------------------------------------------------------------------------------------ entrypoints

def _create(name: str, pretrained, kwargs: dict, **defaults) -> IDANet:
    return build(IDANet, name, pretrained, kwargs, filter_fn=ida_weights, **defaults)


@register
def ida(pretrained=False, **kwargs):
    """IDA head on any backbone: `backbone=` a timm/attnzoo name (default resnet101), 4 heads, heavy."""
    return _create("ida", pretrained, kwargs)


@register
def ida_resnet50(pretrained=False, **kwargs):
    """IDA-R50: ResNet-50 + IDA head (4 heads, heavy), paper formulas."""
    return _create("ida_resnet50", pretrained, kwargs, backbone="resnet50")


@register
def ida_resnet101(pretrained=False, **kwargs):
    """IDA-R101(H) of the paper: ResNet-101 at 448 px + IDA head (4 heads, heavy), paper formulas."""
    return _create("ida_resnet101", pretrained, kwargs, backbone="resnet101", num_heads=4, heavy=True)


@register
def ida_resnet101_light(pretrained=False, **kwargs):
    """IDA-R101(L): ResNet-101 + IDA head with one light attention layer (no FFN, no projection)."""
    return _create("ida_resnet101_light", pretrained, kwargs, backbone="resnet101", num_heads=4,
                   heavy=False)


@register
def ida_resnet101_official(pretrained=False, **kwargs):
    """IDA-R101(H) as the official code computes it (last head's norm, interleaved tokens): the
    target of `attnzoo convert --from ida-official`."""
    return _create("ida_resnet101_official", pretrained, kwargs, backbone="resnet101", num_heads=4,
                   heavy=True, logit_norm="last_head", token_layout="interleaved")


@register
def mlc_baseline(pretrained=False, **kwargs):
    """Multi-label baseline: `backbone=` (default resnet101) + global average pooling + linear."""
    return _create("mlc_baseline", pretrained, kwargs, head="linear")
