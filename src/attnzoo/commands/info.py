"""`attnzoo info MODEL`: parameters, multiply-adds at the real input size (also with the element-wise
operations the SAN seed's counter adds), and the stage layout.

The input size defaults to the model's own: its timm `pretrained_cfg["input_size"]` when it has
one, 32 px for CIFAR networks (names ending in `_cifar`), else 224 px. MACs are counted by
`attnzoo.engine.flops.count_flops` (custom operators included, see there) for one image.

For a 'host+block' name (a block put in by `attnzoo.add_attention`) the bare host is built too
and `inserted` gives what the blocks add: params and MACs, absolute and as a share of the host's.
"""
from __future__ import annotations

from torch import nn

from ..engine.flops import count_flops, human
from ..errors import UserError
from ..models.surgery import split_model_name

# Top-level containers whose children are the stages (timm: `stages`, `blocks`, `layers`, `features`).
_STAGE_CONTAINERS = ("stages", "layers", "blocks", "features")


def default_img_size(name: str, model: nn.Module | None = None) -> int:
    """The input side a network is meant for (see the module docstring)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if size:
        return int(size[-1])
    return 32 if name.partition("+")[0].endswith("_cifar") else 224


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children, with a container of stages (e.g. timm's `stages`) opened one level."""
    out = []
    for name, child in model.named_children():
        container = isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1
        if name in _STAGE_CONTAINERS and container:
            out += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            out.append((name, child))
    return out


def _shape_of(output):
    if hasattr(output, "shape"):
        return list(output.shape)
    if isinstance(output, (tuple, list)):
        return [_shape_of(o) for o in output]
    if isinstance(output, dict):
        return {k: _shape_of(v) for k, v in output.items()}
    return None


def model_info(name: str, img_size: int | None = None, num_classes: int | None = None,
               model_kwargs: dict | None = None) -> dict:
    """Build `name` and describe it.

    Returns a dict: name, input_size [1, C, H, W], num_classes, params, trainable_params,
    macs, macs_elementwise (SAN's counter, see `attnzoo.engine.flops`), flops (for one image),
    uncounted_ops, and stages: a list of
    {name, type, output_shape (of its first call), calls, params, macs} in order of definition;
    a stage the forward pass never called has output_shape None and calls 0. MACs of a stage
    called several times (a shared ReLU or pool) add up over its calls.
    """
    from .. import create_model

    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        if num_classes < 1:
            raise UserError(f"num_classes must be at least 1, got {num_classes}")
        kwargs["num_classes"] = num_classes
    model = create_model(name, **kwargs)
    if img_size is None:
        img_size = default_img_size(name, model)
    if img_size < 1:
        raise UserError(f"img_size must be at least 1, got {img_size}")
    in_chans = 3
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if isinstance(cfg, dict) and cfg.get("input_size"):
        in_chans = int(cfg["input_size"][0])
    in_chans = int(kwargs.get("in_chans", in_chans))
    input_size = (1, in_chans, img_size, img_size)
    info = {"name": name, **describe(model, input_size)}
    host, block = split_model_name(name)
    if block:
        bare = create_model(host, **kwargs)
        host_cost = {"params": sum(p.numel() for p in bare.parameters()),
                     "macs": count_flops(bare, input_size)["macs"]}
        info["inserted"] = {"host": host, "block": block, **cost_against_host(info, host_cost)}
    return info


def cost_against_host(measured: dict, host: dict) -> dict:
    """What inserted blocks add to the bare host: params and MACs added (and in % of the host's),
    and the ratio of each throughput (img/s) both dicts have."""
    out = {}
    for key in ("params", "macs"):
        out[key] = measured[key] - host[key]
        out[f"{key}_pct"] = 100.0 * out[key] / host[key] if host[key] else float("nan")
    for key in ("train_img_per_s", "infer_img_per_s"):
        if key in measured and key in host:
            out[f"{key}_ratio"] = measured[key] / host[key]
    return out


def format_cost(cost: dict) -> str:
    """'+85.50K params (+0.77%), +80.13K MACs (+0.22%)[, train img/s 0.95x, infer img/s 0.97x]'."""
    def signed(n):
        return ("+" if n >= 0 else "") + human(n)

    parts = [f"{signed(cost[k])} {label} ({cost[k + '_pct']:+.2f}%)"
             for k, label in (("params", "params"), ("macs", "MACs"))]
    parts += [f"{phase} img/s {cost[f'{phase}_img_per_s_ratio']:.2f}x" for phase in ("train", "infer")
              if f"{phase}_img_per_s_ratio" in cost]
    return ", ".join(parts)


def describe(model: nn.Module, input_size) -> dict:
    """`model_info` of an already built network, for the input shape `input_size` (N, C, H, W)."""
    input_size = tuple(int(s) for s in input_size)
    stages = _stages(model)
    shapes, calls, hooks = {}, {}, []

    def record(key, out):
        shapes.setdefault(key, _shape_of(out))  # the first call's output
        calls[key] = calls.get(key, 0) + 1

    for stage_name, module in stages:
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, key=stage_name: record(key, out)))
    try:
        counted = count_flops(model, input_size, per_module=[n for n, _ in stages])
    finally:
        for h in hooks:
            h.remove()

    rows = []
    for stage_name, module in stages:
        rows.append({"name": stage_name, "type": type(module).__name__,
                     "output_shape": shapes.get(stage_name), "calls": calls.get(stage_name, 0),
                     "params": sum(p.numel() for p in module.parameters()),
                     "macs": counted["per_module"].get(stage_name, 0)})
    in_children = {id(p) for _, m in stages for p in m.parameters()}
    own = sum(p.numel() for p in model.parameters() if id(p) not in in_children)
    if own:
        rows.append({"name": "(own parameters)", "type": "", "output_shape": None, "calls": 0,
                     "params": own, "macs": 0})
    return {
        "input_size": list(input_size),
        "num_classes": getattr(model, "num_classes", None),
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "macs": counted["macs"],
        "macs_elementwise": counted["macs_elementwise"],
        "flops": counted["flops"],
        "uncounted_ops": counted["uncounted_ops"],
        "stages": rows,
    }


def _fmt_shape(shape) -> str:
    if shape is None:
        return "-"
    if shape and all(isinstance(s, int) for s in shape):
        return "(" + ", ".join(map(str, shape)) + ")"
    return str(shape)


def format_info(info: dict) -> str:
    """A readable summary and per-stage table of `model_info`'s result."""
    lines = [
        f"{info.get('name', 'model')}: input {_fmt_shape(info['input_size'])}, "
        f"{info['num_classes']} classes",
        f"params {info['params']:,} ({human(info['params'])}), trainable {info['trainable_params']:,}",
        f"MACs {human(info['macs'])} per image (FLOPs {human(info['flops'])}; "
        "MACs = multiply-adds, the seeds' 'FLOPs' unit)",
    ]
    if "macs_elementwise" in info:
        lines.append(f"MACs + element-wise {human(info['macs_elementwise'])} per image (the SAN seed's "
                     "counter: + BatchNorm, ReLU, pooling, conv bias)")
    if info.get("uncounted_ops"):
        lines.append("not counted (no FLOP formula): " + ", ".join(info["uncounted_ops"]))
    if info.get("inserted"):
        ins = info["inserted"]
        lines.append(f"inserted {ins['block']} against the bare {ins['host']}: {format_cost(ins)}")
    header = ("stage", "type", "output shape", "params", "MACs")
    table = [header] + [(r["name"], r["type"], _fmt_shape(r["output_shape"])
                         + (f" x{r['calls']} calls" if r.get("calls", 0) > 1 else ""),
                         f"{r['params']:,}", human(r["macs"])) for r in info["stages"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append("")
    for i, row in enumerate(table):
        lines.append("  ".join(cell.rjust(w) if j >= 3 else cell.ljust(w)
                               for j, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    """`attnzoo info MODEL [--img-size N] [--kwarg KEY=VALUE ...]`."""
    from ..engine.device import out_of_memory_hint
    from ..models.configured import with_input_size
    from .overrides import kwarg_overrides

    kwargs = with_input_size(args.model, args.img_size, kwarg_overrides(args.kwarg))
    with out_of_memory_hint(1, args.img_size):
        info = model_info(args.model, img_size=args.img_size, num_classes=args.num_classes,
                          model_kwargs=kwargs)
    print(format_info(info))
    return 0
