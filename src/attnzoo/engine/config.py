"""The one typed configuration of a run: a YAML recipe plus `--set section.key=value` overrides.

Every key is a dataclass field; unknown keys, wrong types (of every list element too), values
outside a `Literal` and numbers outside their range (one table, `RANGES`) are rejected with a
`UserError` that names the valid choices. The resolved config is written to the run folder as
`config.yaml` and can be loaded back unchanged.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from ..errors import UserError, choices_hint, file_errors, first_sentence
from .coerce import build_dataclass


@dataclass
class ModelConfig:
    name: str = "resnet20_cifar"
    kwargs: dict = field(default_factory=dict)  # constructor options: attn, attn_kwargs, depth, ...
    checkpoint: Optional[str] = None  # initial weights (safetensors or attnzoo .pt), loaded strictly
    pretrained: Optional[str] = None  # backbone weights from a local timm/torchvision file
    # A block put into any network after it is built (attnzoo.add_attention), timm's included;
    # model.kwargs.attn instead builds an attnzoo network with its own block.
    attn: Optional[str] = None  # block name, see attnzoo.layers.block_names()
    attn_kwargs: dict = field(default_factory=dict)  # the block's options, e.g. {order: 2}
    attn_stages: Optional[list] = None  # 1-based stages that get it (None: all)
    attn_position: Literal["end", "beside", "gate"] = "end"  # see attnzoo.models.surgery
    # (a 'host+block' model.name takes attn_kwargs, attn_stages, attn_position for its block too:
    # attnzoo.models.configured)


@dataclass
class DataConfig:
    name: str = "synthetic"  # see attnzoo.data.dataset_names()
    root: Optional[str] = None  # folder with the data on disk (--data-dir)
    download: bool = False  # torchvision download, only when asked and online
    img_size: Optional[int] = None  # None: the dataset's native size
    batch_size: int = 128  # global batch, split over processes
    eval_batch_size: Optional[int] = None  # None: 2 x batch_size
    workers: int | Literal["auto"] = "auto"  # DataLoader workers for file datasets (auto: cores per process - 1)
    augment: Literal["none", "crop_flip", "imagenet"] = "crop_flip"
    cutout: int = 0  # side of one square hole (0: off)
    cutout_holes: int = 1
    options: dict = field(default_factory=dict)  # dataset-specific (synthetic: num_train, context_bias, ...)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on BatchNorm/LayerNorm weights and biases
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 0.0  # max global grad norm (0: off)


@dataclass
class ScheduleConfig:
    name: Literal["constant", "step", "multistep", "cosine", "onecycle"] = "cosine"
    epochs: int = 6
    warmup_epochs: float = 0.0  # linear warmup from warmup_lr
    warmup_lr: float = 0.0
    milestones: list[int] = field(default_factory=list)  # multistep, in epochs
    step_size: int = 30  # step, in epochs
    gamma: float = 0.1
    min_lr: float = 0.0  # cosine floor
    pct_start: float = 0.2  # onecycle


@dataclass
class TrainConfig:
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16", "auto"] = "none"  # auto: bf16 on CUDA, float32 elsewhere
    channels_last: bool | Literal["auto"] = False  # auto: on CUDA
    tf32: bool = True  # TF32 matmuls and convolutions on CUDA (float32 runs)
    accum_steps: int = 1  # micro-batches per optimizer step (data.batch_size stays the global batch)
    compile: bool = False  # torch.compile the model for training and evaluation (inductor)
    loss: Literal["auto", "ce", "bce", "asl"] = "auto"  # auto: ce for single-label data, bce for multi-label
    loss_options: dict = field(default_factory=dict)  # asl: gamma_pos, gamma_neg, clip, eps, ...
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: no EMA
    sync_bn: bool = False
    eval_every: int = 1  # epochs
    early_stop: int = 0  # patience in evaluations without improvement (0: off)
    max_steps: int = 0  # stop after this many steps (0: off); dry runs use 2
    log_every: int = 20  # optimizer steps between log steps: loss check, progress bar or log line
    checkpoint_steps: int = 0  # also write last.pt every this many steps inside epochs (0: off)
    checkpoint_minutes: float = 0.0  # also write last.pt this long after the last save (0: off)
    freeze_bn: bool = False  # keep the backbone's BatchNorm statistics and affine frozen


@dataclass
class Config:
    name: str = "default"  # run folder name under out_dir
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paper: dict = field(default_factory=dict)  # numbers the seed reports, e.g. {top1: 95.01, source: ...}

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


# ---------------------------------------------------------------------------- building from data

def config_from_dict(data: dict) -> Config:
    cfg = build_dataclass(Config, data or {})
    validate(cfg)
    return cfg


def config_to_dict(cfg) -> dict:
    out = dataclasses.asdict(cfg)
    out["optim"]["betas"] = list(out["optim"]["betas"])
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict, items) -> dict:
    """`data` with the `--set KEY=VALUE` items applied in order: a mapping value merges into the
    mapping at KEY, except an empty one, which empties it (`--set data.options={}`)."""
    for item in items:
        value = parse_override(item)
        parts = item.partition("=")[0].strip().split(".")
        data = _set(data, parts, {}) if _leaf(value, parts) == {} else deep_merge(data, value)
    return data


def _leaf(nested: dict, parts: list[str]):
    for part in parts:
        nested = nested[part]
    return nested


def _set(data: dict, parts: list[str], value) -> dict:
    """A copy of `data` with `value` at the path `parts` (mappings made on the way)."""
    inner = data.get(parts[0]) if isinstance(data.get(parts[0]), dict) else {}
    return {**data, parts[0]: value if len(parts) == 1 else _set(inner, parts[1:], value)}


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that numbers in scientific notation (5e-4, 1E6) are numbers
    (PyYAML follows YAML 1.1, where a float needs a dot, and would read 5e-4 as a string), and
    aliases are refused: a config is copied as plain data, where nested aliases multiply."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError(f"aliases (*name) are not accepted in a config{self.peek_event().start_mark}")
        return super().compose_node(parent, index)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def parse_override(item: str, flag: str = "--set") -> dict:
    """'a.b.c=value' -> {'a': {'b': {'c': value}}}, the value parsed as YAML (numbers, lists, ...);
    `flag` names the option in errors."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise UserError(f"{flag} '{item}': expected KEY=VALUE, e.g. "
                        f"{'optim.lr=0.05' if flag == '--set' else 'attn=se'}")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):  # not YAML: the text itself
        value = raw
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def recipe_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def read_yaml(path_or_name: str) -> dict:
    """A recipe by file path or by the name of a bundled recipe (`attnzoo recipes` lists them)."""
    path = Path(path_or_name)
    if path.is_dir():
        raise UserError(f"recipe {path} is a folder; give a recipe YAML file or a bundled recipe name")
    if not path.exists():
        bundled = recipe_dir() / f"{path_or_name}.yaml"
        if not bundled.exists():
            raise UserError(f"recipe '{path_or_name}' is neither a file nor a bundled recipe; "
                            f"{choices_hint(path_or_name, recipe_names())}")
        path = bundled
    try:
        with file_errors(f"read recipe {path}"):
            data = parse_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"recipe {path}: not valid YAML ({first_sentence(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path}: expected a mapping of sections (model, data, optim, ...)")
    return data


def load_config(recipe: Optional[str] = None, overrides: list[str] = (), **top) -> Config:
    """Recipe (path or bundled name) + `--set` overrides + top-level keyword overrides -> Config."""
    data = apply_overrides(read_yaml(recipe) if recipe else {}, overrides)
    data = deep_merge(data, {k: v for k, v in top.items() if v is not None})
    return config_from_dict(data)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


@dataclass(frozen=True)
class Range:
    """Valid numbers: from `low` to `high` (None: unbounded), ends included unless `open`."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, v) -> bool:
        return ((self.low is None or v > self.low or (v == self.low and not self.low_open)) and
                (self.high is None or v < self.high or (v == self.high and not self.high_open)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'greater than' if self.low_open else 'at least'} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


# Every numeric key's valid values (each element of a list key); None stays valid where a key
# allows it. A new numeric config key needs its line here (tests/engine/test_config_ranges.py).
RANGES = {
    "data.img_size": Range(1), "data.batch_size": Range(1), "data.eval_batch_size": Range(1),
    "data.workers": Range(0), "data.cutout": Range(0), "data.cutout_holes": Range(1),
    "optim.lr": Range(0, low_open=True), "optim.momentum": Range(0, 1, high_open=True),
    "optim.weight_decay": Range(0), "optim.betas": Range(0, 1, high_open=True),
    "optim.clip_grad": Range(0),
    "schedule.epochs": Range(1), "schedule.warmup_epochs": Range(0), "schedule.warmup_lr": Range(0),
    "schedule.milestones": Range(1), "schedule.step_size": Range(1),
    "schedule.gamma": Range(0, low_open=True), "schedule.min_lr": Range(0),
    "schedule.pct_start": Range(0, 1, low_open=True, high_open=True),
    "train.seed": Range(0, 2**64 - 1),  # torch.manual_seed takes an unsigned 64-bit integer
    "train.label_smoothing": Range(0, 1, high_open=True), "train.ema_decay": Range(0, 1, high_open=True),
    "train.eval_every": Range(1), "train.early_stop": Range(0), "train.max_steps": Range(0),
    "train.log_every": Range(1), "train.accum_steps": Range(1), "train.checkpoint_steps": Range(0),
    "train.checkpoint_minutes": Range(0),
}


def validate(cfg: Config) -> None:
    """The ranges of `RANGES` and the checks that span several keys."""
    for key, valid in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and not isinstance(v, str) and v not in valid:  # str: "auto"
                raise UserError(f"{key} must be {valid}, got {value}")
    milestones = cfg.schedule.milestones
    if cfg.schedule.name == "multistep" and not milestones:
        raise UserError("schedule.milestones: the multistep schedule needs epochs, e.g. [81, 122]")
    if any(a >= b for a, b in zip(milestones, milestones[1:], strict=False)):
        raise UserError(f"schedule.milestones must be increasing epochs, e.g. [81, 122], got {milestones}")
    if cfg.optim.nesterov and cfg.optim.momentum == 0:
        raise UserError("optim.nesterov needs a positive optim.momentum, e.g. 0.9")
    from ..data import dataset_names

    if cfg.data.name not in dataset_names():
        raise UserError(f"unknown dataset '{cfg.data.name}'; {choices_hint(cfg.data.name, dataset_names())}")
    _validate_attention(cfg.model)
    if not cfg.name or "/" in cfg.name or cfg.name in (".", ".."):
        raise UserError(f"name '{cfg.name}': a run name is one folder name, without '/'")


def _validate_attention(m: ModelConfig) -> None:
    from ..layers.factory import check_options, get_block

    host, plus, block = m.name.partition("+")
    if plus and get_block(m.attn) is not None:
        raise UserError(f"model.name '{m.name}' already names a block; use either the "
                        "'host+block' name or model.attn, not both")
    if not plus and get_block(m.attn) is None:  # UserError for an unknown name
        extra = [k for k in ("attn_kwargs", "attn_stages") if getattr(m, k)]
        if extra:
            raise UserError(f"model.{extra[0]} is set but model.attn names no block: name one with "
                            f"model.attn=NAME or a 'host+block' model.name, e.g. {host}+lsas_se")
        return
    name = block if plus else m.attn
    if get_block(name) is None:  # UserError for an unknown name
        return
    try:  # the block's options, before anything is built
        check_options(name, m.attn_kwargs)
    except UserError as e:
        raise UserError(f"model.attn_kwargs: {e}") from None
