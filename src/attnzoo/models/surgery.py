"""Put an attention block into a network that is already built: `add_attention(model, "lsas_se")`.

The block goes where the papers put it: after the last norm of each residual block's branch,
before the addition (and before drop-path). Supported hosts, found by their residual block
classes:

| family | blocks | how the block gets its place |
|---|---|---|
| torchvision ResNet, ResNeXt, Wide-ResNet | BasicBlock, Bottleneck | subclass with an `attn` slot |
| timm ResNet family (resnet*, resnext*, wide_resnet*, seresnet*, ecaresnet*, ...) | BasicBlock, Bottleneck | timm's own `se` slot |
| timm RegNet (regnetx_*, regnety_*) | Bottleneck | subclass with an `attn` slot after conv3 |
| timm ConvNeXt | ConvNeXtBlock | subclass with an `attn` slot before drop-path |
| attnzoo ResNets (resnet*_cifar, senet*, lsas_senet*) | BasicBlock, Bottleneck | attnzoo's own `attn` slot |

A host without a slot there gets one by switching each block's class to a subclass defined here
whose forward is the host's plus `self.attn` (the instance keeps its modules and weights; the
class switch is the only way to add a step inside a forward without renaming the host's
state-dict keys). Host weights therefore load as before: only the block's keys are new
(`load_host_weights` loads a host state dict strictly apart from them).

`position` says what happens to a gate the host already has:

- "end" (default): the papers' position; a host gate at that very place (timm's `se` in
  SE/ECA-ResNets, attnzoo's `attn`) is replaced, one elsewhere (RegNetY's SE after the 3x3 conv)
  is kept;
- "beside": the papers' position, keeping every host gate (the new block follows one at the same
  place);
- "gate": in place of the host's own gate wherever its family puts it (RegNet: after the 3x3
  conv, an empty slot in RegNetX); families without a gate of their own refuse it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import timm.models.convnext as timm_convnext
import timm.models.regnet as timm_regnet
import timm.models.resnet as timm_resnet
import torchvision.models.resnet as tv_resnet
from torch import nn

from ..errors import UserError, choices_hint
from ..layers.factory import block_names, get_attn
from . import _resnet
from ._registry import check_registered

POSITIONS = ("end", "beside", "gate")


# ------------------------------------------------------------------ blocks with an attention slot

class TorchvisionBasicBlock(tv_resnet.BasicBlock):
    """torchvision's BasicBlock with `attn` after bn2, before the addition."""

    forward = _resnet.BasicBlock.forward  # the same submodule names as attnzoo's block


class TorchvisionBottleneck(tv_resnet.Bottleneck):
    """torchvision's Bottleneck with `attn` after bn3, before the addition."""

    forward = _resnet.Bottleneck.forward  # the same submodule names as attnzoo's block


class TimmBasicBlock(timm_resnet.BasicBlock):
    """timm's ResNet BasicBlock with `attn` right after its `se` (position='beside')."""

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        x = self.attn(x if self.se is None else self.se(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self.act2(x + shortcut)


class TimmBottleneck(timm_resnet.Bottleneck):
    """timm's ResNet Bottleneck with `attn` right after its `se` (position='beside')."""

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        x = self.attn(x if self.se is None else self.se(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        return self.act3(x + shortcut)


class RegNetBottleneck(timm_regnet.Bottleneck):
    """timm's RegNet Bottleneck with `attn` after conv3 (its norm), before the addition."""

    def forward(self, x):
        shortcut = x
        x = self.attn(self.conv3(self.se(self.conv2(self.conv1(x)))))
        if self.downsample is not None:  # timm: None means a block without a shortcut
            x = self.drop_path(x) + self.downsample(shortcut)
        return self.act3(x)


class ConvNeXtBlock(timm_convnext.ConvNeXtBlock):
    """timm's ConvNeXtBlock with `attn` at the end of the branch, before drop-path and addition."""

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:  # channels-last norm and MLP
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(self.attn(x)) + self.shortcut(shortcut)


# ------------------------------------------------------------------------------- host families

@dataclass(frozen=True)
class Family:
    """How one family of residual blocks takes a block.

    `end_slot`: the host's own attribute at the papers' position (None: the block class is
    switched to `subclass[type]`, which reads `attn` there); `beside`: the subclasses that add
    `attn` after that own slot; `gate_slot`: the attribute of the family's own gate elsewhere and
    the function giving its channels.
    """
    name: str
    blocks: tuple
    channels: Callable[[nn.Module], int]  # block -> channels at the papers' position
    subclass: dict = field(default_factory=dict)
    end_slot: str | None = None
    beside: dict = field(default_factory=dict)
    gate_slot: tuple | None = None   # (attribute, block -> channels)


def _bn_channels(block):
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).num_features


FAMILIES = (
    Family("torchvision ResNet/ResNeXt/Wide-ResNet", (tv_resnet.BasicBlock, tv_resnet.Bottleneck),
           _bn_channels, subclass={tv_resnet.BasicBlock: TorchvisionBasicBlock,
                                   tv_resnet.Bottleneck: TorchvisionBottleneck}),
    Family("timm ResNet family", (timm_resnet.BasicBlock, timm_resnet.Bottleneck), _bn_channels,
           end_slot="se", beside={timm_resnet.BasicBlock: TimmBasicBlock,
                                  timm_resnet.Bottleneck: TimmBottleneck}),
    Family("timm RegNet", (timm_regnet.Bottleneck,), lambda b: b.conv3.bn.num_features,
           subclass={timm_regnet.Bottleneck: RegNetBottleneck},
           gate_slot=("se", lambda b: b.conv2.bn.num_features)),
    Family("timm ConvNeXt", (timm_convnext.ConvNeXtBlock,), lambda b: b.conv_dw.out_channels,
           subclass={timm_convnext.ConvNeXtBlock: ConvNeXtBlock}),
    Family("attnzoo ResNets", (_resnet.BasicBlock, _resnet.Bottleneck), _bn_channels,
           end_slot="attn"),
)


def supported_families() -> str:
    return "; ".join(f.name for f in FAMILIES)


def stage_of(name: str) -> str:
    """Module name -> its stage: 'layer2.3.attn' -> 'layer2', 'stages.1.blocks.0' -> 'stages.1',
    's3.b1' -> 's3'."""
    parts = name.split(".")
    if len(parts) > 1 and not parts[0][-1:].isdigit() and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def residual_blocks(model: nn.Module) -> tuple[Family, list[tuple[str, nn.Module]]]:
    """The family of `model` and its residual blocks (name, module) in order; UserError naming
    the supported families when it has none of theirs."""
    for family in FAMILIES:
        found = [(n, m) for n, m in model.named_modules() if type(m) in family.blocks
                 or type(m) in family.subclass.values() or type(m) in family.beside.values()]
        if found:
            return family, found
    raise UserError(f"add_attention: {type(model).__name__} has no residual block of a supported "
                    f"family; supported: {supported_families()}")


# ---------------------------------------------------------------------------------- insertion

def split_model_name(name) -> tuple[str, str | None]:
    """'resnet18+lsas_se' -> ('resnet18', 'lsas_se'): a registered network and the block
    `add_attention` puts into it; a plain name -> (name, None). UserError for an unknown part."""
    host, plus, block = name.partition("+") if isinstance(name, str) else (name, "", "")
    check_registered(host)
    if plus and block not in block_names():
        raise UserError(f"model '{name}': '{block}' after '+' is not an attention block; "
                        f"{choices_hint(block, block_names())}")
    return host, block if plus else None


@dataclass
class Insertion:
    """Where `add_attention` put blocks: `stages` {stage name: count}, `modules` (their names),
    `new_keys` (their state-dict keys) and `replaced` (the host gates they took the place of)."""
    block: str
    family: str
    position: str
    stages: dict = field(default_factory=dict)
    modules: list = field(default_factory=list)
    new_keys: list = field(default_factory=list)
    replaced: list = field(default_factory=list)

    def __str__(self) -> str:
        where = ", ".join(f"{s}: {n}" for s, n in self.stages.items())
        return f"{self.block} ({self.family}, position {self.position}): {where}"


def _block_label(name) -> str:
    return name if isinstance(name, str) else getattr(name, "__name__", "custom block")


def _switch(block: nn.Module, subclass: type) -> None:
    block.__class__ = subclass  # same instance, modules and weights: only the forward changes


def _place(family: Family, block: nn.Module, make, position: str) -> tuple[str, bool]:
    """Put a new block into `block`; (its attribute, whether a host gate was replaced)."""
    base = next(c for c in family.blocks if isinstance(block, c))
    if position == "gate":
        if family.gate_slot is None and family.end_slot is None:
            raise UserError(f"add_attention: {family.name} blocks have no gate of their own; "
                            "use position='end'")
        if family.gate_slot is not None:
            attr, channels = family.gate_slot
            old = getattr(block, attr)
            setattr(block, attr, make(channels(block)))
            return attr, not isinstance(old, nn.Identity)
        position = "end"
    new = make(family.channels(block))
    if family.end_slot is None:  # no own slot there: the subclass reads `attn`
        replaced = isinstance(getattr(block, "attn", None), nn.Module)  # inserted before
        _switch(block, family.subclass[base])
        block.attn = new
        return "attn", replaced
    old = getattr(block, family.end_slot)
    empty = old is None or isinstance(old, nn.Identity)
    if position == "beside" and not empty:
        if base not in family.beside:
            raise UserError(f"add_attention: {family.name} blocks hold one block at the papers' "
                            "position; build the host without attention (attn=None) or use "
                            "position='end' to replace its block")
        _switch(block, family.beside[base])
        block.attn = new
        return "attn", False
    setattr(block, family.end_slot, new)
    return family.end_slot, not empty


def add_attention(model: nn.Module, name, *, stages=None, position: str = "end", **kwargs):
    """Insert the attention block `name` into every residual block of `model` (in place).

    Args:
        model: a built network of a supported family (module docstring); its weights are kept.
        name: a block name (`attnzoo.layers.block_names()`) or a `channels -> nn.Module` callable.
        stages: 1-based stage numbers that get the block (default: all), in the order the
            network runs its stages.
        position: 'end' (default), 'beside' or 'gate' (module docstring).
        **kwargs: the block's options, e.g. order=2 for LSAS.

    Returns (model, Insertion); `str(insertion)` reads 'lsas_se (timm RegNet, position end):
    s1: 1, s2: 1, ...'. Raises UserError for an unknown block, option, stage or architecture.
    """
    if position not in POSITIONS:
        raise UserError(f"add_attention: unknown position '{position}'; {choices_hint(position, POSITIONS)}")
    make = get_attn(name, **kwargs)
    if make is None:
        raise UserError(f"add_attention: name a block; {choices_hint(str(name), block_names())}")
    family, blocks = residual_blocks(model)
    names = list(dict.fromkeys(stage_of(n) for n, _ in blocks))
    chosen = range(1, len(names) + 1) if stages is None else list(stages)
    bad = [s for s in chosen if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= len(names)]
    if bad:
        raise UserError(f"add_attention: stages {list(chosen)}: this {family.name} network has "
                        f"stages 1 to {len(names)} ({', '.join(names)})")
    wanted = {names[s - 1] for s in chosen}
    report = Insertion(_block_label(name), family.name, position)
    for block_name, block in blocks:
        stage = stage_of(block_name)
        if stage not in wanted:
            continue
        attr, replaced = _place(family, block, make, position)
        path = f"{block_name}.{attr}"
        report.stages[stage] = report.stages.get(stage, 0) + 1
        report.modules.append(path)
        if replaced:
            report.replaced.append(path)
        report.new_keys += [f"{path}.{k}" for k in getattr(block, attr).state_dict()]
    return model, report


def load_host_weights(model: nn.Module, state: dict, insertion: Insertion) -> list[str]:
    """Load the host network's state dict into `model` after `add_attention`.

    Strict for everything but the inserted blocks: every other key must match in name and shape,
    the inserted blocks' keys are left as initialised, and host keys under a replaced gate are
    dropped. Returns the new keys (those not in `state`); UserError naming any other mismatch.
    """
    from ..weights import describe_mismatch, state_mismatch

    inside = tuple(f"{m}." for m in insertion.modules)
    host_state = {k: v for k, v in state.items() if not k.startswith(inside)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(inside)}
    mismatch = state_mismatch(own, host_state)
    if any(mismatch):
        raise UserError(f"host weights do not fit the network outside the inserted blocks: "
                        f"{describe_mismatch(*mismatch)}")
    model.load_state_dict(host_state, strict=False)
    return list(insertion.new_keys)
