"""The `attnzoo` command. Thin: it parses arguments and calls the library.

Exit status: 0 success; 1 a failed run (the loss diverged); 2 a user error (a bad name, value,
file, path or a size that does not fit in memory), one line on stderr and never a traceback;
130 interrupted (Ctrl-C); 143 stopped by SIGTERM or SIGUSR1 after saving checkpoints/last.pt.
Anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError, check_writable, describe_os_error


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _at_least(least: int):
    """An argparse type: an integer of at least `least` (refused by the parser, in one line)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_run_options(p) -> None:
    """Options shared by train and compare: shortcuts for the most used config keys."""
    p.add_argument("recipe", nargs="?", help="a recipe YAML file or bundled recipe name "
                   "(`attnzoo recipes` lists them); defaults train resnet20_cifar on synthetic")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=0.05 --set model.kwargs.attn=se")
    p.add_argument("--data", help="dataset name (data.name)")
    p.add_argument("--data-dir", help="folder with the dataset on disk (data.root)")
    p.add_argument("--epochs", type=int, help="schedule.epochs")
    p.add_argument("--batch-size", type=int, help="global batch size (data.batch_size)")
    p.add_argument("--lr", type=float, help="optim.lr")
    p.add_argument("--device", help="train.device: auto, cpu, cuda, cuda:N")
    p.add_argument("--out-dir", help="parent folder of run folders (default runs)")


def _run_overrides(args) -> list[str]:
    pairs = {"data.name": args.data, "data.root": args.data_dir, "schedule.epochs": args.epochs,
             "data.batch_size": args.batch_size, "optim.lr": args.lr, "train.device": args.device,
             "out_dir": args.out_dir}
    pairs.update({"model.name": getattr(args, "model", None), "train.seed": getattr(args, "seed", None),
                  "model.pretrained": getattr(args, "pretrained", None), "name": getattr(args, "name", None)})
    # strings quoted, so '--name 2024' stays a name and '--model ""' is refused, not the default
    return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in pairs.items()
            if v is not None] + args.overrides


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnzoo", description="Attention mechanisms for image recognition: "
                     "train, evaluate, compare and analyse attention networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train and evaluate a network (defaults: a small ResNet on "
                       "the embedded synthetic dataset, a few minutes on a laptop CPU)")
    _add_run_options(p)
    p.add_argument("--model", help="model name (model.name)")
    p.add_argument("--name", help="run folder name (default: the recipe's)")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--pretrained", help="local backbone weights, timm or torchvision format "
                   "(model.pretrained); attnzoo never downloads")
    p.add_argument("--resume", help="'auto' to continue runs/<name>/checkpoints/last.pt, or a path")
    p.add_argument("--dry-run", action="store_true",
                   help="build everything and run two steps on synthetic data of the recipe's shape")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")

    p = sub.add_parser("eval", help="metrics of a saved model, as JSON")
    p.add_argument("--checkpoint", required=True, help="best.safetensors or last.pt of a run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="data.* overrides, e.g. --set data.options.num_test=500")
    p.add_argument("--data", help="dataset name (default: the one it was trained on)")
    p.add_argument("--data-dir", help="folder with the dataset on disk")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="write the JSON here as well as to stdout")

    p = sub.add_parser("models", help="registered attnzoo models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'lsas*'")

    p = sub.add_parser("recipes", help="bundled recipes and the numbers their papers report")

    p = sub.add_parser("info", help="params, FLOPs and per-stage layout of a model")
    p.add_argument("model")
    p.add_argument("--img-size", type=_at_least(1))
    p.add_argument("--num-classes", type=int)
    p.add_argument("--kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor option, e.g. --kwarg attn=lsas_se")

    p = sub.add_parser("bench", help="train/inference img/s, peak memory, params, FLOPs")
    p.add_argument("--models", required=True, type=_csv, help="comma-separated model names; "
                   "host+block inserts a block, e.g. resnet18,resnet18+lsas_se")
    p.add_argument("--batch-size", type=_at_least(1), default=32)
    p.add_argument("--img-size", type=_at_least(1))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=_at_least(1), default=10, help="timed steps per model")
    p.add_argument("--warmup", type=_at_least(0), default=3, help="untimed steps before timing")
    p.add_argument("--json", dest="json_out", help="also write the rows as JSON here")

    p = sub.add_parser("compare", help="train several models with one recipe and seeds; "
                       "mean ± std table, JSON and plot")
    _add_run_options(p)
    p.add_argument("--models", required=True, type=_csv, help="comma-separated model names; "
                   "host+block inserts a block, e.g. resnet18,resnet18+lsas_se")
    p.add_argument("--seeds", type=_at_least(1), default=3, help="number of seeds (0..N-1)")
    p.add_argument("--analyze", action="store_true", help="add attention-bias columns")
    p.add_argument("--name", help="comparison folder name under the out dir")

    p = sub.add_parser("convert", help="map an official checkpoint onto an attnzoo model")
    p.add_argument("--from", dest="source", required=True, help="official source, e.g. lsas-official")
    p.add_argument("checkpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--kwarg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="output .safetensors file")

    p = sub.add_parser("analyze", help="attention maps and attention-bias statistics of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", help="dataset with boxes (default: the one it was trained on)")
    p.add_argument("--data-dir")
    p.add_argument("--num-samples", type=_at_least(0), default=0, help="0: the whole split")
    p.add_argument("--split", help="eval split to analyse (default: the first, e.g. test)")
    p.add_argument("--methods", type=_csv, default=["gradcam", "eigencam"],
                   help="class activation maps: gradcam, eigencam, scorecam")
    p.add_argument("--pixels", nargs="+", metavar="ROW,COL",
                   help="feature-map pixels at which to show SAN/LESA attention weights")
    p.add_argument("--boxes", help="box file for image folders (ImageNet LOC_val_solution.csv)")
    p.add_argument("--no-bias", action="store_true", help="maps only, no bias statistics")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=_at_least(1), default=256)
    p.add_argument("--out-dir", help="default: <run folder>/analysis")
    return parser


def _kwargs(items: list[str]) -> dict:
    from .engine.config import parse_override

    out = {}
    for item in items:
        out.update(parse_override(item, flag="--kwarg"))
    return out


def cmd_train(args) -> int:
    from .engine.config import load_config
    from .engine.distributed import elastic_resume
    from .engine.rundir import config_to_continue
    from .engine.train import train

    cfg = load_config(args.recipe, _run_overrides(args))
    resume = elastic_resume(args.resume)
    cfg = config_to_continue(cfg, args.recipe, _run_overrides(args), resume)  # the run's own config
    if args.dry_run:
        from .engine.dryrun import dry_run_config

        cfg = dry_run_config(cfg, args.out_dir)
    summary = train(cfg, resume=resume, quiet=args.quiet)
    if args.dry_run:
        print(f"dry run of {args.recipe or 'the defaults'} passed: {summary['steps']} steps, "
              f"model {summary['model']} ({summary['params'] / 1e6:.2f}M params)")
    return 0


def _data_overrides(args, cfg) -> None:
    from .engine.config import config_from_dict, config_to_dict, deep_merge, parse_override

    data = config_to_dict(cfg)
    extra = {"data": {k: v for k, v in {"name": args.data, "root": args.data_dir,
                                          "batch_size": getattr(args, "batch_size", None)}.items()
                      if v is not None}}
    for item in args.overrides:
        extra = deep_merge(extra, parse_override(item))
    return config_from_dict(deep_merge(data, extra))


def cmd_eval(args) -> int:
    from .engine.evaluate import evaluate_checkpoint

    if args.out:
        check_writable(args.out, "--out")
    result = evaluate_checkpoint(args.checkpoint, lambda cfg: _data_overrides(args, cfg), args.device)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def cmd_models(args) -> int:
    import torch

    from . import create_model, list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no attnzoo model matches '{args.pattern}'; `attnzoo models` lists all")
    width = max(len(n) for n in names)
    for name in names:
        with torch.device("meta"):  # parameter counts without allocating weights
            params = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<{width}}  {params / 1e6:8.2f}M")
    return 0


def cmd_recipes(args) -> int:
    from .engine.config import read_yaml, recipe_names

    for name in recipe_names():
        data = read_yaml(name)
        paper = {k: v for k, v in (data.get("paper") or {}).items() if k != "source"}
        model = (data.get("model") or {}).get("name", "?")
        dataset = (data.get("data") or {}).get("name", "?")
        print(f"{name:<36} {model:<26} {dataset:<12} paper: {paper or '-'}")
    return 0


def cmd_info(args) -> int:
    from .commands.info import format_info, model_info
    from .engine.device import out_of_memory_hint

    with out_of_memory_hint(1, args.img_size):
        info = model_info(args.model, img_size=args.img_size, num_classes=args.num_classes,
                          model_kwargs=_kwargs(args.kwarg))
    print(format_info(info))
    return 0


def cmd_bench(args) -> int:
    from .commands.bench import benchmark, format_table
    from .engine.device import out_of_memory_hint

    if args.json_out:
        check_writable(args.json_out, "--json")
    with out_of_memory_hint(args.batch_size, args.img_size):
        rows = benchmark(args.models, batch_size=args.batch_size, img_size=args.img_size,
                         device=args.device, steps=args.steps, warmup=args.warmup)
    print(format_table(rows))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def cmd_compare(args) -> int:
    from .commands.compare import compare
    from .engine.config import load_config

    base = load_config(args.recipe, _run_overrides(args))
    out_dir = Path(base.out_dir) / (args.name or f"compare-{'-vs-'.join(args.models)}")
    check_writable(out_dir, "comparison folder", folder=True)
    result = compare(args.models, list(range(args.seeds)), base, out_dir, analyze=args.analyze)
    print((out_dir / "comparison.md").read_text() if (out_dir / "comparison.md").exists()
          else json.dumps(result, indent=2))
    return 0


def cmd_convert(args) -> int:
    from .convert import convert_checkpoint

    report = convert_checkpoint(args.source, args.checkpoint, args.model, args.out,
                                _kwargs(args.kwarg))
    print(report)
    return 0


def cmd_analyze(args) -> int:
    from .analysis import run_analysis

    if args.out_dir:
        check_writable(args.out_dir, "--out-dir", folder=True)
    pixels = None
    if args.pixels:
        try:
            pixels = [tuple(int(v) for v in p.split(",")) for p in args.pixels]
        except ValueError:
            raise UserError(f"--pixels {' '.join(args.pixels)}: expected ROW,COL pairs, e.g. 3,4 7,7") from None
    result = run_analysis(args.checkpoint, out_dir=args.out_dir,
                          data_overrides=lambda cfg: _data_overrides(args, cfg),
                          num_samples=args.num_samples, methods=tuple(args.methods),
                          split=args.split, pixels=pixels, batch_size=args.batch_size,
                          device=args.device, bias=not args.no_bias, boxes_file=args.boxes)
    out = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).resolve().parent.parent / "analysis"
    print(f"report: {out / 'report.md'}  (statistics: {out / 'bias.json'})")
    bias = (result.get("bias") or {}).get(args.methods[0], {}).get("all") or {}
    headline = {"bias": {k: v for k, v in bias.items() if not isinstance(v, list)},
                "context": result.get("context")}
    print(json.dumps(headline, indent=2))
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "models": cmd_models, "recipes": cmd_recipes,
            "info": cmd_info, "bench": cmd_bench, "compare": cmd_compare, "convert": cmd_convert,
            "analyze": cmd_analyze}


def _error(message) -> None:
    print("attnzoo: error: " + " ".join(str(message).split()), file=sys.stderr)


def main(argv=None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        _error(e)
        return 2
    except OSError as e:  # a file the user named or a folder to write: unreadable, full, missing
        if e.filename is None:
            raise
        _error(describe_os_error(e))
        return 2
    except KeyboardInterrupt as e:  # during training it names the command that continues the run
        hint = "interrupted; `attnzoo train --resume auto` continues from the last checkpoint"
        print(f"attnzoo: {str(e) or hint}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a diverged run ends with its message, anything else is a bug
        from .engine.preemption import Preempted
        from .engine.train import TrainingDiverged  # here, so other commands skip the training imports

        if isinstance(e, Preempted):
            print(f"attnzoo: {e}", file=sys.stderr)
            return e.exit_status
        if not isinstance(e, TrainingDiverged):
            raise
        _error(e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
