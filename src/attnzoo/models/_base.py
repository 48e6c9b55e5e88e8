"""timm's network interface, written once for every attnzoo network.

- The classifier head: global pooling (timm's `SelectAdaptivePool2d`: avg, max, avgmax,
  catavgmax or '' for none), dropout, a linear `fc`; `reset_classifier`, `forward_head`.
  The modules stay top-level `global_pool` / `fc`, as in timm's ResNet, so state-dict keys do not
  change.
- Feature extraction over the stages that `feature_info` lists: `forward_intermediates` and
  `prune_intermediate_layers` with timm's signatures, which is what `features_only=True` uses
  (timm's `FeatureGetterNet`); gradient checkpointing.

A network sets `feature_info` (one dict per stage: num_chs, reduction, module), `stage_modules`
(the module names each stage owns, for pruning) and implements `_stages()`: one callable per
stage, whose composition is `forward_features`. `forward_features` itself is written out in each
network, so that TorchScript can compile it; the contract tests check that both agree. Pruning
empties the modules of the dropped stages, so a stage owns the pooling it starts with (the
ImageNet ResNets' max pool after the stem tap is stage 1's); SAN and VGG, whose max pools are not
emptied with the stages, go stage by stage through `_stages()` once pruned, so that
`forward_features` ends at the last kept stage. With `prune_head=False` at the last index the classifier stays and
the output is unchanged.
"""
# No `from __future__ import annotations` here: FX copies the root forward's annotations into the
# traced code, where a string annotation ('torch.Tensor') is a name TorchScript cannot resolve.
import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import checkpoint
from timm.models._features import feature_take_indices
from torch import nn

from ..errors import UserError

POOLS = ("avg", "max", "avgmax", "catavgmax", "")


def check_pool(global_pool: str) -> str:
    if global_pool not in POOLS:
        raise UserError(f"global_pool '{global_pool}' is not valid; valid: "
                        + ", ".join(repr(p) for p in POOLS))
    return global_pool


class AttnzooNet(nn.Module):
    """Base of every attnzoo network; see the module docstring."""

    def __init__(self):
        super().__init__()
        self.grad_checkpointing = False
        self.pruned = False  # by prune_intermediate_layers, which keeps feature_depth stages
        self.feature_depth = None

    # ------------------------------------------------------------------------------ classifier

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float):
        self.num_features, self.drop_rate = num_features, drop_rate
        self.reset_classifier(num_classes, global_pool)

    def _placement(self):
        """A function putting new modules (a new head) on the network's current device and dtype, in
        its training mode; taken before the old head is replaced."""
        like = next(self.parameters(), None)

        def place(*modules):
            for m in modules:
                if like is not None:
                    m.to(device=like.device, dtype=like.dtype)
                m.train(self.training)
            return modules if len(modules) > 1 else modules[0]
        return place

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        """A new `fc` for num_classes (0: none, forward gives pooled features); keeps the pooling
        unless `global_pool` is given."""
        pool = global_pool if global_pool is not None else self.global_pool.pool_type
        self.num_classes = num_classes
        place = self._placement()
        self.global_pool, self.fc = place(*create_classifier(self.num_features, num_classes, check_pool(pool)))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()  # pre_logits width

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, num_features, h, w) -> logits (N, num_classes), or the pooled features (pre_logits)."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -------------------------------------------------------------------------------- features

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """The outputs of the stages named by `indices` (None: all; int n: the last n; a list:
        those), and unless `intermediates_only` the final feature map; `norm` is accepted for
        timm's signature (no network here has a final norm)."""
        if output_fmt != "NCHW":
            raise UserError(f"output_fmt '{output_fmt}' is not valid; valid: 'NCHW'")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        stages = self._stages()[:self.feature_depth]
        if stop_early:
            stages = stages[:max_index + 1]
        intermediates = []
        for i, stage in enumerate(stages):
            x = checkpoint(stage, x) if self.grad_checkpointing else stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        """Drop the stages after the last of `indices` (and the classifier); returns the kept
        absolute indices."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        for names in self.stage_modules[max_index + 1:]:
            for name in names:
                self.set_submodule(name, nn.Sequential())  # empty: passes its input through
        self.pruned, self.feature_depth = True, max_index + 1
        if max_index < len(self.feature_info) - 1:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or self.feature_depth < len(self.feature_info):
            self.reset_classifier(0, "")
        return take
