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

Backbone ImageNet weights come from a local file only: `pretrained=PATH` (or
`backbone_weights=PATH`; `model.pretrained` in a recipe), a torchvision or timm state dict
(`.pth`/`.pt`/`.bin` read with `weights_only=True`, or `.safetensors`). The classifier of the file
is dropped; everything else must fit the backbone exactly, otherwise a `UserError` names the
missing and unexpected keys. `pretrained=True` is refused (attnzoo downloads nothing).
"""
from __future__ import annotations

import os
import sys

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..weights import describe_mismatch, read_state_dict, state_mismatch
from ..layers.intervention import InterventionalClassifier
from ._registry import ATTNZOO_MODELS, TIMM_ONLY_KWARGS, check_registered, register

HEADS = ("ida", "linear")


# ------------------------------------------------------------------------------ backbone weights

def load_backbone_weights(backbone: nn.Module, path, name: str) -> None:
    """Load ImageNet weights into a classifier-less backbone, strictly (see the module docstring)."""
    state = read_state_dict(path, "pretrained backbone file")
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
            backbone.load_state_dict(cand)
            return
    raise UserError(f"pretrained file {path} does not fit backbone '{name}' (wrong architecture?): "
                    + describe_mismatch(*best[1], shown=4))


def create_backbone(name: str, **kwargs) -> nn.Module:
    """A classifier-less timm or attnzoo network whose `forward_features` gives the feature map."""
    check_registered(name, "backbone")
    if name.startswith(("ida", "mlc_baseline")):
        raise UserError(f"backbone '{name}' is itself a multi-label network; name a feature extractor")
    try:
        if name in ATTNZOO_MODELS:
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    except TypeError as e:
        raise UserError(f"backbone '{name}': {e}") from None


# ----------------------------------------------------------------------------------- the network

class IDANet(nn.Module):
    """Backbone + IDA head (`head="ida"`) or global average pooling + linear (`head="linear"`).

    Args:
        backbone: timm or attnzoo model name; built without classifier and without downloads.
        num_classes: number of labels.
        head: "ida" or "linear".
        num_heads, heavy, beta, ffn_dim, logit_norm, token_layout: the IDA head's options
            (`attnzoo.layers.intervention.InterventionalClassifier`).
        backbone_weights: local file of ImageNet weights for the backbone (or None: random init).
        backbone_kwargs: extra constructor options of the backbone.
        freeze_backbone: backbone parameter-name prefixes to keep fixed, e.g. ["conv1", "bn1",
            "layer1"] as the official code (DETR-style: only layer2-4 of a ResNet train).
        drop_rate: dropout before the linear classifier (linear head only).

    forward_features: (N, 3, H, W) -> (N, num_features, h, w); forward_head -> (N, num_classes).
    """

    def __init__(self, backbone: str = "resnet101", num_classes: int = 80, head: str = "ida",
                 num_heads: int = 4, heavy: bool = True, beta: float = 1.0 / 32, ffn_dim: int = 2048,
                 logit_norm: str = "per_head", token_layout: str = "head", backbone_weights=None,
                 backbone_kwargs: dict | None = None, freeze_backbone=(), drop_rate: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise UserError(f"head '{head}' is not valid; valid: {', '.join(HEADS)}")
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, **(backbone_kwargs or {}))
        if backbone_weights:
            load_backbone_weights(self.backbone, backbone_weights, backbone)
        self._freeze(freeze_backbone)
        self.num_features = self.backbone.num_features
        self.head_type = head
        self.drop_rate = drop_rate
        self._head_kwargs = dict(num_heads=num_heads, heavy=heavy, beta=beta, ffn_dim=ffn_dim,
                                 logit_norm=logit_norm, token_layout=token_layout)
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

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

    def _make_head(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        if self.head_type == "linear":
            return nn.Linear(self.num_features, num_classes)
        return InterventionalClassifier(self.num_features, num_classes, **self._head_kwargs)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_features, h, w); token outputs (N, L, D) become (N, D, 1, L)."""
        x = self.backbone.forward_features(x)
        if x.ndim == 3:
            return x.transpose(1, 2).unsqueeze(2)
        if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
            return x.permute(0, 3, 1, 2)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, D, h, w) -> logits (N, C); pre_logits: class features (N, C, D) for the IDA head,
        pooled features (N, D) for the linear head."""
        if self.head_type == "ida" and isinstance(self.head, InterventionalClassifier):
            return self.head(x, pre_logits=pre_logits)
        x = x.mean((2, 3))
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """IDA's class-specific spatial attention, (N, 3, H, W) -> (N, heads, C, h, w)."""
        if not isinstance(self.head, InterventionalClassifier):
            raise UserError("attention_maps needs the IDA head (head='ida')")
        return self.head.attention_maps(self.forward_features(x))


# ------------------------------------------------------------------------------------ entrypoints

def _create(name: str, pretrained, kwargs: dict, **defaults) -> IDANet:
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_ONLY_KWARGS}
    if isinstance(pretrained, (str, os.PathLike)) and str(pretrained):
        kwargs.setdefault("backbone_weights", str(pretrained))
    elif pretrained:
        raise UserError(f"{name}: attnzoo downloads no weights; give the backbone's ImageNet weights "
                        "as a local file (pretrained=PATH, --set model.pretrained=PATH)")
    return IDANet(**{**defaults, **kwargs})


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
