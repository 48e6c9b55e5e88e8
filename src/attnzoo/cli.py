"""The `attnzoo` command: it parses the arguments and dispatches to `attnzoo.commands`.

Exit status: 0 success; 1 a failed run (the loss diverged); 2 a user error (a bad name, value,
file, path or a size that does not fit in memory), one line on stderr and never a traceback;
130 interrupted (Ctrl-C); 141 the reader of stdout closed it (`attnzoo models | head -2`), as for
any command a pipe cuts short; 143 stopped by SIGTERM or SIGUSR1 after saving checkpoints/last.pt.
Anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import warnings

from .errors import UserError, describe_os_error


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        where = f"{self.prog}: " if " " in self.prog else ""  # a subcommand's; the top level is said once
        raise UserError(f"{where}{message} (see `{self.prog} --help`)")


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

    p = sub.add_parser("export", help="a trained run as timm's Hugging Face folder or as ONNX")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run folder (runs/NAME) or a checkpoint")
    p.add_argument("--format", dest="fmt", required=True, metavar="{hf,onnx}",
                   help="hf (config.json, model.safetensors, README.md; loads with timm's local-dir: "
                   "and hf-hub:) or onnx (needs attnzoo[onnx]; written once onnxruntime's logits match "
                   "PyTorch's within 1e-4 * max(1, max|logit|) or 4x PyTorch's own float32 round-off)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write, new or empty")
    p.add_argument("--license", default="mit", help="licence of the weights in the model card (default mit)")

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


# Each command's body is `attnzoo.commands.<module>.run(args)`, imported only when it runs, so
# `attnzoo models` does not import the training engine.
def _command(name: str):
    def run(args) -> int:
        return importlib.import_module(f"{__package__}.commands.{name}").run(args)
    return run


COMMANDS = {name: _command(name) for name in ("train", "eval", "models", "recipes", "info", "bench",
                                              "compare", "convert", "export", "analyze")}


def _error(message) -> None:
    print("attnzoo: error: " + " ".join(str(message).split()), file=sys.stderr)


class _HeldWarnings:
    """Warnings shown as one line each (`attnzoo: warning: ...`) after `HOLD_S` seconds; a user
    error in that time replaces them, so that a failure a warning foretold (a folder whose every
    image is unreadable: the warning for the first, then the error) is one line, and a long
    run still shows its warnings as they come."""

    HOLD_S = 2.0

    def __init__(self):
        self.pending: list[str] = []
        self.lock = threading.Lock()
        self.timer = None

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        with self.lock:
            self.pending.append(f"attnzoo: warning: {' '.join(str(message).split())}")
            if self.timer is None:
                self.timer = threading.Timer(self.HOLD_S, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self, drop: bool = False) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
            if not drop:
                for text in self.pending:
                    print(text, file=sys.stderr, flush=True)
            self.pending, self.timer = [], None


def main(argv=None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    held = _HeldWarnings()
    with warnings.catch_warnings():
        warnings.showwarning = held.show
        try:
            return _run(argv, held)
        finally:
            held.flush()


def _run(argv, held: _HeldWarnings) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        held.flush(drop=True)
        _error(e)
        return 2
    except BrokenPipeError:  # the reader stopped early (`attnzoo models | head -2`): not an error
        # stdout to /dev/null, so that Python's final flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # a file the user named or a folder to write: unreadable, full, missing
        if e.filename is None:
            raise
        held.flush(drop=True)
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
