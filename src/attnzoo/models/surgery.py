"""Put an attention block into a network that is already built: `add_attention(model, "lsas_se")`.

The block goes where the papers put it: after the last norm of each residual block's branch,
before the addition (and before drop-path). Supported hosts, found by their residual block
classes:

| family | blocks | how the block gets its place |
|---|---|---|
| torchvision ResNet, ResNeXt, Wide-ResNet | BasicBlock, Bottleneck | `bn2`/`bn3` becomes `Followed(norm, block)` |
| timm ResNet family (resnet*, resnext*, wide_resnet*, seresnet*, ecaresnet*, ...) | BasicBlock, Bottleneck | timm's own `se` slot |
| timm RegNet (regnetx_*, regnety_*) | Bottleneck | `conv3` (conv + norm) becomes `Followed(conv3, block)` |
| timm ConvNeXt | ConvNeXtBlock | `drop_path` becomes `Preceded(drop_path, block)` |
| attnzoo ResNets (resnet*_cifar, senet*, lsas_senet*) | BasicBlock, Bottleneck | attnzoo's own `attn` slot |

A host without a slot there gets one by composition: the module its forward calls at that place
is replaced by a wrapper that runs it and the block (`Followed`: block after it; `Preceded`:
block before it). The host's blocks keep their classes and their forward code, which stays
timm's or torchvision's; nothing of it is copied here. The wrapped module's keys move under
`host.` (`layer1.0.bn2.weight` -> `layer1.0.bn2.host.weight`) and the block's are under the
wrapper (`layer1.0.bn2.attn.*`); `load_host_weights` maps a host state dict onto that, and a
load-state-dict pre-hook (`LegacyKeys`) maps checkpoints of the earlier layout, where the block
sat in `layer1.0.attn`, so they load strictly too.

`position` says what happens to a gate the host already has:

- "end" (default): the papers' position; a host gate at that very place (timm's `se` in
  SE/ECA-ResNets, attnzoo's `attn`) is replaced, one elsewhere (RegNetY's SE after the 3x3 conv)
  is kept;
- "beside": the papers' position, keeping every host gate (timm's `se` becomes
  `Followed(se, block)`: the new block follows the host's gate);
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


# ------------------------------------------------------------------------- the composition

class Followed(nn.Module):
    """A host module followed by an inserted block, in the host module's slot: attn(host(x)).

    The host block's own forward calls it where it called the host module, so the block runs
    between that module and whatever the host does next (the residual addition, drop-path)."""

    def __init__(self, host: nn.Module, attn: nn.Module):
        super().__init__()
        self.host = host
        self.attn = attn

    def forward(self, x):
        return self.attn(self.host(x))


class Preceded(nn.Module):
    """An inserted block, then the host module, in the host module's slot: host(attn(x))."""

    def __init__(self, host: nn.Module, attn: nn.Module):
        super().__init__()
        self.attn = attn
        self.host = host

    def forward(self, x):
        return self.host(self.attn(x))


WRAPPERS = (Followed, Preceded)


def _unwrapped(module: nn.Module) -> nn.Module:
    return module.host if isinstance(module, WRAPPERS) else module


class LegacyKeys(dict):
    """A load-state-dict pre-hook mapping the key prefixes of checkpoints written before the
    composition ({'layer1.0.bn2.': 'layer1.0.bn2.host.', 'layer1.0.attn.': 'layer1.0.bn2.attn.'})
    to today's; keys already in today's layout pass unchanged. A class, so models still pickle."""

    def rename(self, key: str, prefix: str = "") -> str:
        if key.startswith(tuple(prefix + new for new in self.values())):
            return key  # today's layout
        for old, new in self.items():
            if key.startswith(prefix + old):
                return prefix + new + key[len(prefix + old):]
        return key

    def __call__(self, module, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            renamed = self.rename(key, prefix)
            if renamed != key:
                state_dict[renamed] = state_dict.pop(key)


# ------------------------------------------------------------------------------- host families

@dataclass(frozen=True)
class Family:
    """How one family of residual blocks takes a block.

    `end_slot`: the host's own attribute at the papers' position, set in place; otherwise `wrap`
    gives the attribute of the host module the block follows there (`Followed`), or precedes when
    `before` (`Preceded`). `beside`: 'beside' wraps the host's own gate in `end_slot`.
    `gate_slot`: the attribute of the family's own gate elsewhere and the function giving its
    channels.
    """
    name: str
    blocks: tuple
    channels: Callable[[nn.Module], int]  # block -> channels at the papers' position
    end_slot: str | None = None
    wrap: Callable[[nn.Module], str] | None = None
    before: bool = False
    beside: bool = False
    gate_slot: tuple | None = None   # (attribute, block -> channels)


def _last_norm(block) -> str:
    return "bn3" if hasattr(block, "bn3") else "bn2"


def _bn_channels(block):
    return _unwrapped(getattr(block, _last_norm(block))).num_features


FAMILIES = (
    Family("torchvision ResNet/ResNeXt/Wide-ResNet", (tv_resnet.BasicBlock, tv_resnet.Bottleneck),
           _bn_channels, wrap=_last_norm),
    Family("timm ResNet family", (timm_resnet.BasicBlock, timm_resnet.Bottleneck), _bn_channels,
           end_slot="se", beside=True),
    Family("timm RegNet", (timm_regnet.Bottleneck,), lambda b: _unwrapped(b.conv3).bn.num_features,
           wrap=lambda b: "conv3", gate_slot=("se", lambda b: b.conv2.bn.num_features)),
    Family("timm ConvNeXt", (timm_convnext.ConvNeXtBlock,), lambda b: b.conv_dw.out_channels,
           wrap=lambda b: "drop_path", before=True),
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
        found = [(n, m) for n, m in model.named_modules() if type(m) in family.blocks]
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
    `new_keys` (their state-dict keys), `replaced` (the host gates they took the place of) and
    `legacy` (the key map from the layout before the composition, see `LegacyKeys`)."""
    block: str
    family: str
    position: str
    stages: dict = field(default_factory=dict)
    modules: list = field(default_factory=list)
    new_keys: list = field(default_factory=list)
    replaced: list = field(default_factory=list)
    legacy: LegacyKeys = field(default_factory=LegacyKeys)

    def __str__(self) -> str:
        where = ", ".join(f"{s}: {n}" for s, n in self.stages.items())
        return f"{self.block} ({self.family}, position {self.position}): {where}"


def _block_label(name) -> str:
    return name if isinstance(name, str) else getattr(name, "__name__", "custom block")


def _place(family: Family, block: nn.Module, make, position: str) -> tuple[str, bool, dict]:
    """Put a new block into `block`: (its path in the block, whether a host gate or an earlier
    block was replaced, {old key prefix: new} for checkpoints of the layout before composition)."""
    if position == "gate":
        if family.gate_slot is None and family.end_slot is None:
            raise UserError(f"add_attention: {family.name} blocks have no gate of their own; "
                            "use position='end'")
        if family.gate_slot is not None:
            attr, channels = family.gate_slot
            old = getattr(block, attr)
            setattr(block, attr, make(channels(block)))
            return attr, not isinstance(old, nn.Identity), {}
        position = "end"
    new = make(family.channels(block))
    slot = family.wrap(block) if family.wrap is not None else family.end_slot
    old = getattr(block, slot)
    empty = old is None or isinstance(old, nn.Identity)
    if family.wrap is None and not (position == "beside" and not empty):
        setattr(block, slot, new)  # the host's own slot
        return slot, not empty, {}
    if family.wrap is None and not family.beside:
        raise UserError(f"add_attention: {family.name} blocks hold one block at the papers' "
                        "position; build the host without attention (attn=None) or use "
                        "position='end' to replace its block")
    if isinstance(old, WRAPPERS):  # inserted before: the new block takes the earlier one's place
        old.attn = new
        return f"{slot}.attn", True, {}
    setattr(block, slot, (Preceded if family.before else Followed)(old, new))
    return f"{slot}.attn", False, {f"{slot}.": f"{slot}.host.", "attn.": f"{slot}.attn."}


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
        attr, replaced, legacy = _place(family, block, make, position)
        path = f"{block_name}.{attr}"
        report.stages[stage] = report.stages.get(stage, 0) + 1
        report.modules.append(path)
        if replaced:
            report.replaced.append(path)
        report.new_keys += [f"{path}.{k}" for k in block.get_submodule(attr).state_dict()]
        report.legacy.update({f"{block_name}.{old}": f"{block_name}.{new}" for old, new in legacy.items()})
    if report.legacy:  # checkpoints saved before the composition still load, strictly
        model.register_load_state_dict_pre_hook(report.legacy)
        # the same map for the loaders that compare keys before loading (weights.in_current_layout)
        model.state_key_maps = [*getattr(model, "state_key_maps", []), report.legacy]
    return model, report


def load_host_weights(model: nn.Module, state: dict, insertion: Insertion) -> list[str]:
    """Load the host network's state dict into `model` after `add_attention`.

    Strict for everything but the inserted blocks: every other key must match in name and shape,
    the inserted blocks' keys are left as initialised, and host keys under a replaced gate are
    dropped. Returns the new keys (those not in `state`); UserError naming any other mismatch.
    """
    from ..weights import describe_mismatch, state_mismatch

    inside = tuple(f"{m}." for m in insertion.modules)
    state = {insertion.legacy.rename(k): v for k, v in state.items()}  # host keys of wrapped modules
    host_state = {k: v for k, v in state.items() if not k.startswith(inside)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(inside)}
    mismatch = state_mismatch(own, host_state)
    if any(mismatch):
        raise UserError(f"host weights do not fit the network outside the inserted blocks: "
                        f"{describe_mismatch(*mismatch)}")
    model.load_state_dict(host_state, strict=False)
    return list(insertion.new_keys)
