"""The command line: every user error is one line on stderr and exit status 2."""
import json
import os
import subprocess
import sys

import pytest

from attnzoo.cli import main

from .conftest import child_env

TINY = ["--set", "model.name=resnet_cifar", "--set", "model.kwargs.depth=8",
        "--set", "data.options.num_train=32", "--set", "data.options.num_test=16",
        "--set", "data.workers=0", "--batch-size", "16", "--epochs", "1", "--device", "cpu"]


def names(message: str, *facts: str) -> None:
    """`message` names every fact (a key, a value, the valid choices), whatever its wording."""
    missing = [f for f in facts if f not in message]
    assert not missing, f"{message!r} does not name {missing}"


def one_line_error(capsys, argv, *facts: str) -> str:
    """`attnzoo ARGV` fails with exit status 2 and one stderr line that names every fact."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnzoo: error: ") and "\n" not in err, err
    names(err, *facts)
    return err


@pytest.mark.parametrize("argv, facts", [
    (["train", "--model", "resnet21_cifar"], ("resnet21_cifar", "resnet20_cifar")),
    (["train", "--set", "model.kwargs.depth=21", "--model", "resnet_cifar"], ("depth 21", "6n+2")),
    (["train", "--set", "model.kwargs.block=wide", "--model", "resnet_cifar"], ("wide", "basic, bottleneck")),
    (["train", "--set", "optim.name=lion"], ("optim.name", "lion", "sgd, adamw, adam")),
    (["train", "--data", "mnist"], ("mnist", "cifar10")),
    (["train", "--data", "cifar10", "--data-dir", "/nonexistent"], ("/nonexistent",)),
    (["train", "no_such_recipe"], ("no_such_recipe", "senet164_cifar10")),
    (["train", "--set", "model.kwargs.attn=nope"], ("nope", "lsas_se")),
    (["train", "--epochs", "x"], ("--epochs", "'x'")),
    (["bogus"], ("bogus", "train")),
    (["eval", "--checkpoint", "/nonexistent/best.safetensors"], ("/nonexistent/best.safetensors",)),
    (["models", "zzz*"], ("zzz*", "attnzoo models")),
    (["convert", "--from", "nowhere", "x.pt", "--model", "resnet20_cifar", "--out", "y.safetensors"],
     ("--from", "nowhere", "lsas-official")),
    (["train", "--model", ""], ("model name", "''")),
    (["train", "--name", ""], ("name ''", "folder name")),
    (["train", "--data", "cifar11", "--set", "data.options.num_train=8"], ("cifar11", "cifar10")),
    (["train", "--set", "optim.lr=5e-4", "--set", "optim.weight_decay=-1e-4"],
     ("optim.weight_decay", "at least 0", "-0.0001")),
    (["train", "--set", "optim.lr=.nan"], ("optim.lr", "finite", "nan")),
    (["info", "resnet20_cifar", "--kwarg", "depth"], ("--kwarg", "'depth'", "KEY=VALUE")),
    (["info", "resnet20_cifar", "--kwarg", "num_classes=abc"], ("num_classes", "integer", "abc")),
    (["info", "senet_cifar", "--kwarg", "attn_kwargs={reduction: -4}"], ("reduction", "positive", "-4")),
    (["bench", "--models", "resnet20_cifar", "--steps", "0"], ("--steps", "at least 1", "0")),
    (["analyze", "--checkpoint", "x", "--num-samples", "-1"], ("--num-samples", "at least 0")),
    (["compare", "--models", "resnet20_cifar", "--seeds", "two"], ("--seeds", "integer", "two")),
    # a block's options need a block (model.attn or a 'host+block' name)
    (["train", "--set", "model.attn_kwargs.rd_ratio=0.25"], ("model.attn_kwargs", "model.attn", "host+block")),
    (["train", "--model", "resnet18+sb", "--set", "model.attn=se"], ("resnet18+sb", "model.attn")),
    (["train", "--set", "train.loss=focal"], ("train.loss", "focal", "auto, ce, bce, asl")),
    (["train", "--set", "model.attn_position=middle"], ("model.attn_position", "middle", "end, beside, gate")),
    (["train", "--set", "model.attn_stages=two"], ("model.attn_stages", "list", "two")),
    (["analyze", "--checkpoint", "x", "--pixels", "3;4"], ("--pixels", "3;4", "ROW,COL")),
    # a block's options: by name and by value, whichever route gives them
    (["train", "--model", "resnet20_cifar+se", "--set", "model.attn_kwargs.rd_ratio=abc"],
     ("model.attn_kwargs", "block 'se'", "rd_ratio", "'abc'", "a positive number")),
    (["train", "--set", "model.attn=lsas_se", "--set", "model.attn_kwargs.order=1.5"],
     ("block 'lsas_se'", "order", "1.5", "an integer")),
    (["train", "--model", "resnet20_cifar+cbam", "--set", "model.attn_kwargs.rdratio=0.5"],
     ("block 'cbam'", "unknown option 'rdratio'", "rd_ratio")),
    (["train", "--set", "model.kwargs.attn=sb", "--set", "model.kwargs.attn_kwargs.rd_ratio=-1"],
     ("block 'sb'", "rd_ratio", "-1", "a positive number")),
    (["info", "resnet20_cifar", "--kwarg", "attn=lesa", "--kwarg", "attn_kwargs={fmap_size: 0}"],
     ("block 'lesa'", "fmap_size", "0", "a positive integer")),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, argv, facts):
    one_line_error(capsys, argv + ["--out-dir", str(tmp_path)] if argv[0] == "train" else argv, *facts)


def test_the_program_is_named_once(capsys):
    err = one_line_error(capsys, ["recipes", "lsas*"], "unrecognized arguments: lsas*", "--help")
    assert err.count("attnzoo") == 2, err  # 'attnzoo: error:' and '`attnzoo --help`'
    one_line_error(capsys, ["info"], "attnzoo info: ", "model")


def test_train_then_eval_and_models(capsys, tmp_path):
    assert main(["train", "--name", "t", "--out-dir", str(tmp_path), "--quiet", *TINY]) == 0
    best = tmp_path / "t" / "checkpoints" / "best.safetensors"
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(best), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert printed["metrics"]["test"]["top1"] == pytest.approx(summary["final"]["test"]["top1"])
    assert main(["models", "resnet*_cifar"]) == 0
    listing = capsys.readouterr().out
    assert "resnet20_cifar" in listing and "0.27M" in listing


def test_eval_refuses_a_corrupt_checkpoint_without_traceback(tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(b"not a safetensors file")
    proc = subprocess.run([sys.executable, "-m", "attnzoo.cli", "eval", "--checkpoint", str(bad)],
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "not a readable safetensors file" in proc.stderr


def test_exit_status_1_for_a_failed_run_and_130_for_an_interruption(capsys, monkeypatch):
    import attnzoo.engine.train as T

    def diverges(*args, **kwargs):
        raise T.TrainingDiverged("loss became nan at epoch 1, step 3")

    monkeypatch.setattr(T, "train", diverges)
    assert main(["train"]) == 1
    assert capsys.readouterr().err == "attnzoo: error: loss became nan at epoch 1, step 3\n"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", interrupted)
    assert main(["train"]) == 130
    assert "--resume auto" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug keeps its traceback")

    monkeypatch.setattr(T, "train", bug)
    with pytest.raises(ZeroDivisionError):
        main(["train"])


def test_shortcut_values_stay_strings_and_scientific_numbers_are_numbers(monkeypatch):
    import attnzoo.engine.train as T

    seen = {}

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(T, "train", fake_train)
    assert main(["train", "--name", "2024", "--data-dir", "1e5", "--set", "optim.lr=5e-4"]) == 0
    cfg = seen["cfg"]
    assert cfg.name == "2024" and cfg.data.root == "1e5" and cfg.optim.lr == 5e-4


# ---------------------------------------------------------------- what a new user hits (issue 22)

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished TINY run (trained with data.options) and what it printed off a terminal."""
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        printed = []
        mp.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
        assert main(["train", "--name", "t", "--out-dir", str(out), *TINY]) == 0
    return out / "t", "\n".join(printed)


def image_folder(root, classes=10, per_split=(("train", 1), ("val", 1)), size=(16, 16)):
    """root/{train,val}/c<class>/<i>.png: plain images, a colour for each class and image."""
    from PIL import Image

    for split, n in per_split:
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", size, (20 * c, 90, 9 + 7 * i)).save(root / split / f"c{c}" / f"{i}.png")
    return root


def test_eval_on_another_dataset_drops_the_training_data_options(capsys, tmp_path, tiny_run):
    """Item 1: the run was trained with data.options.num_train; an image folder takes no options."""
    best = tiny_run[0] / "checkpoints" / "best.safetensors"
    folder = image_folder(tmp_path / "images")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(best), "--data", "imagefolder", "--data-dir", str(folder),
                 "--set", "data.workers=0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "imagefolder" and 0 <= result["metrics"]["val"]["top1"] <= 100


def test_eval_options_can_be_emptied_or_removed_one_by_one():
    """Item 1: `--set data.options={}` empties them, `--set data.options.KEY=null` removes one."""
    from types import SimpleNamespace

    from attnzoo.commands.overrides import data_overrides
    from attnzoo.engine.config import load_config

    cfg = load_config(None, ["data.options.num_train=32", "data.options.num_test=16"])
    args = SimpleNamespace(data=None, data_dir=None, batch_size=None, overrides=["data.options={}"])
    assert data_overrides(args, cfg).data.options == {}
    args.overrides = ["data.options.num_train=null"]
    assert data_overrides(args, cfg).data.options == {"num_test": 16}
    args.overrides, args.data = [], "synthetic_multilabel"
    assert data_overrides(args, cfg).data.options == {}


def test_analyze_refuses_a_dataset_of_other_classes_in_one_line(capsys, tmp_path, tiny_run):
    """Item 2: a 10-class model on 20-class multi-label data, refused as eval refuses it."""
    best = tiny_run[0] / "checkpoints" / "best.safetensors"
    one_line_error(capsys, ["analyze", "--checkpoint", str(best), "--data", "synthetic_multilabel",
                            "--set", "data.options.num_test=8", "--num-samples", "8", "--out-dir",
                            str(tmp_path / "a")], "10 classes")


def test_a_pipe_closed_early_is_no_traceback(capsys, monkeypatch):
    """Item 3: `attnzoo models | head -1`: stdout is a pipe whose reader has gone; exit status 141,
    like any command a pipe cuts short, and nothing on stderr."""
    read, write = os.pipe()
    os.close(read)  # what `head -1` does after its line
    with open(write, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main(["models", "resnet20_cifar"]) == 141
    assert capsys.readouterr().err == ""


def test_host_block_names_take_the_block_options(tmp_path):
    """Item 4: `--model host+block` with model.attn_kwargs and model.attn_stages."""
    from attnzoo.engine.checkpoint import load_model
    from attnzoo.layers import ShiftBalance

    assert main(["train", "--name", "hb", "--out-dir", str(tmp_path), "--quiet", *TINY,
                 "--set", "model.name=resnet_cifar+sb", "--set", "model.attn_stages=[3]",
                 "--set", "model.attn_kwargs.rd_ratio=0.5"]) == 0
    model, _ = load_model(tmp_path / "hb" / "checkpoints" / "best.safetensors")
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, ShiftBalance)}
    assert blocks and all(n.startswith("layer3.") for n in blocks)
    assert all(m.fc1.out_features == 32 for m in blocks.values())  # 64 channels x 0.5


def test_lesa_sizes_from_the_input_size_alone(capsys):
    """Item 5: `info --img-size` builds a fixed-size network for that size; an inserted LESA block
    of the wrong size names the option that fixes it, and that option works."""
    import torch

    from attnzoo.engine.config import load_config
    from attnzoo.models.configured import create_configured_model

    assert main(["info", "lesa_resnet50", "--img-size", "64"]) == 0
    assert "input (1, 3, 64, 64)" in capsys.readouterr().out
    one_line_error(capsys, ["info", "resnet18+lesa", "--img-size", "32"], "fmap_size=8", "model.attn_stages")
    m = load_config(None, ["model.name=resnet18+lesa", "model.attn_stages=[1]",
                           "model.attn_kwargs.fmap_size=8"]).model
    assert create_configured_model(m, num_classes=3).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_multilabel_data_gets_bce_by_default_and_says_so(capsys, tmp_path, tiny_run):
    """Item 6: train.loss=auto is bce for multi-label data, ce for single-label; the header says
    which; a recipe that names its loss keeps it."""
    from attnzoo.engine.config import load_config

    capsys.readouterr()
    assert main(["train", "--name", "ml", "--out-dir", str(tmp_path), *TINY, "--data", "synthetic_multilabel"]) == 0
    names(capsys.readouterr().out, "loss     bce (train.loss=auto: multi-label data)")
    assert json.loads((tmp_path / "ml" / "summary.json").read_text())["loss"] == "bce"
    assert json.loads((tiny_run[0] / "summary.json").read_text())["loss"] == "ce"
    names(tiny_run[1], "loss     ce (train.loss=auto: single-label data)")
    assert load_config("ida_resnet101_coco").train.loss == "asl"


def test_pretrained_file_and_inserted_block_are_named(capsys, tmp_path):
    """Item 7: the header names the inserted block and what a pretrained file gave."""
    from safetensors.torch import save_file

    import attnzoo

    host = tmp_path / "host.safetensors"
    save_file(attnzoo.create_model("resnet_cifar", depth=8, num_classes=10).state_dict(), str(host))
    capsys.readouterr()
    assert main(["train", "--name", "p", "--out-dir", str(tmp_path), *TINY, "--pretrained", str(host),
                 "--set", "model.attn=se"]) == 0
    out = capsys.readouterr().out
    header, table = out.split("epoch 1/1")
    names(header, "model    resnet_cifar + se", f"pretrained {host}:", "tensors loaded", "new: 3 x attn")
    names(table, "model    resnet_cifar + se")
    assert main(["train", "--name", "q", "--out-dir", str(tmp_path), *TINY, "--pretrained", str(host)]) == 0
    names(capsys.readouterr().out, f"pretrained {host}: all", "tensors loaded (strict)")


def test_the_results_table_says_when_best_came_from_the_ema_weights():
    """Item 7: with EMA the best weights may be the EMA ones; the table says so."""
    from attnzoo.engine.runlog import format_table

    summary = {"run_dir": "runs/x", "model": "resnet18", "attn": "lsas_se", "params": 1e6,
               "final": {"test": {"top1": 50.0}}, "best": {"test": {"top1": 51.0}, "source": "ema"},
               "best_epoch": 3, "epochs_run": 4, "train_img_per_s": 10.0, "wall_time_s": 5.0}
    names(format_table(summary), "resnet18 + lsas_se", "epoch 3", "EMA weights")
    summary["best"]["source"] = "model"
    assert "EMA" not in format_table(summary)


def test_epochs_off_a_terminal_print_like_the_results_table(tiny_run):
    """Not a Python dict: the table's split and metric names with two decimals."""
    import re

    line = next(ln for ln in tiny_run[1].splitlines() if ln.startswith("epoch "))
    assert "{" not in line
    assert re.fullmatch(r"epoch 1/1  loss \d+\.\d{4}  lr \S+  test top1 \d+\.\d\d top5 \d+\.\d\d"
                        r"  test_swapped top1 \d+\.\d\d top5 \d+\.\d\d", line), line
