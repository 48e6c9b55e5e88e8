"""`attnzoo export`: a tiny trained run as timm's Hugging Face folder (loaded back by timm from
`local-dir:` and, offline, from a Hub cache as `hf-hub:`) and as ONNX (run by onnxruntime)."""
import json
import math
from pathlib import Path

import pytest
import timm
import torch

from attnzoo.cli import main
from attnzoo.engine.checkpoint import load_model, save_weights

from ..conftest import tiny_config
from ..test_cli import one_line_error


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from attnzoo.engine.train import train

    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path_factory.mktemp("export"), schedule={"name": "cosine", "epochs": 1})
    return Path(train(cfg, quiet=True)["run_dir"])


def _argv(*argv) -> list[str]:
    return ["export", *map(str, argv)]


def _export(capsys, *argv) -> tuple[int, str, str]:
    status = main(_argv(*argv))
    out, err = capsys.readouterr()
    return status, out, err


def _same_outputs(model, run_dir, size=32):
    reference, _ = load_model(run_dir / "checkpoints" / "best.safetensors")
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(model.eval()(x), reference(x))


def test_hf_folder_loads_in_timm_from_local_dir_and_hub(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "hf"
    status, printed, _ = _export(capsys, run_dir, "--format", "hf", "--out", out)
    assert status == 0 and f"local-dir:{out}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet_cifar" and config["model_args"]["depth"] == 8
    cfg = config["pretrained_cfg"]  # the run's images: synthetic at 32 px, its own normalisation
    assert cfg["input_size"] == [3, 32, 32] and cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.25] * 3
    card = (out / "README.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    top1 = summary["best"]["test"]["top1"]
    for text in ("license: mit", "library_name: timm", f'"top1": {top1}', "Deep Residual Learning",
                 "depth: 8", "name: synthetic"):  # licence, metrics, paper, recipe
        assert text in card, text

    assert _same_outputs(timm.create_model(f"local-dir:{out}", pretrained=True), run_dir)

    # hf-hub: the same folder as a snapshot in a Hub cache, read offline as a pushed repo would be
    import huggingface_hub.constants as hub

    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((out / name).read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    assert _same_outputs(timm.create_model("hf-hub:someone/tiny", pretrained=True), run_dir)


def test_onnx_matches_pytorch_in_onnxruntime(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    status, _, err = _export(capsys, run_dir / "checkpoints" / "last.pt", "--format", "onnx", "--out", out)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.onnx"]
    model, _ = load_model(run_dir / "checkpoints" / "last.pt")
    x = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(session.run(None, {"image": x.numpy()})[0] - expected).max() <= 1e-4


def test_user_errors_are_one_line_and_write_nothing(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    one_line_error(capsys, _argv(tmp_path / "missing", "--format", "hf", "--out", out),
                   "missing does not exist", "run folder")
    one_line_error(capsys, _argv(run_dir, "--format", "tflite", "--out", out),
                   "'tflite'", "hf, onnx")
    one_line_error(capsys, _argv(tmp_path, "--format", "hf", "--out", out), "holds no checkpoints")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "model.safetensors").write_text("earlier export")
    one_line_error(capsys, _argv(run_dir, "--format", "hf", "--out", kept), "not empty")
    assert [p.name for p in kept.iterdir()] == ["model.safetensors"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(capsys, _argv(run_dir, "--format", "hf", "--out", a_file), "is a file")

    from attnzoo.commands import export

    monkeypatch.setattr(export, "_importable", lambda name: name != "onnxscript")
    one_line_error(capsys, _argv(run_dir, "--format", "onnx", "--out", out),
                   "needs onnxscript", 'pip install "attnzoo[onnx]"')
    monkeypatch.undo()

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator. More detail")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    one_line_error(capsys, _argv(run_dir, "--format", "onnx", "--out", out),
                   "model 'resnet_cifar' cannot be exported to ONNX (RuntimeError: unsupported operator.)")
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary folder left


def test_a_block_inserted_after_building_is_refused_for_hf(tmp_path, capsys):
    from attnzoo.engine.config import config_to_dict
    from attnzoo.models.configured import create_configured_model

    cfg = tiny_config(tmp_path, model={"attn": "se", "kwargs": {"num_classes": 10}})
    model = create_configured_model(cfg.model, **cfg.model.kwargs)
    save_weights(tmp_path / "se.safetensors", model, config_to_dict(cfg))
    checkpoint = tmp_path / "se.safetensors"
    one_line_error(capsys, _argv(checkpoint, "--format", "hf", "--out", tmp_path / "o"),
                   "add_attention", "--format onnx")


def test_onnx_check_allows_round_off_and_refuses_errors():
    from attnzoo.commands.export import check_onnx
    from attnzoo.errors import UserError

    check_onnx("m", 5e-4, scale=10.0)  # 5e-5 of logits of 10
    check_onnx("m", 5e-4, scale=1.0, roundoff=2e-4)  # PyTorch's own float32 error is of that order
    with pytest.raises(UserError, match=r"by 0.0005, more than 0.0001 .*round-off, 1e-05\)"):
        check_onnx("m", 5e-4, scale=1.0, roundoff=1e-5)
    with pytest.raises(UserError, match="by 0.5, more than 0.004"):  # a wrong graph: the logits' size
        check_onnx("m", 0.5, scale=40.0, roundoff=1e-3)
    with pytest.raises(UserError, match="PyTorch's own logits on a random batch are not finite"):
        check_onnx("m", math.nan, scale=math.inf)


def _onnxruntime_error(model, name, shape, calibration_batch, tmp_path):
    """BatchNorm statistics from one training batch, then the eval model exported to ONNX: (the
    largest PyTorch output, the largest difference of onnxruntime's) on a batch size the export
    never saw."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from attnzoo.commands.export import save_onnx

    with torch.no_grad():
        model.train()(torch.randn(calibration_batch, *shape))  # BatchNorm statistics, as trained
    model.eval()
    assert save_onnx(model, name, shape, tmp_path) == ["model.onnx"]
    x = torch.randn(5, *shape)
    with torch.no_grad():
        expected = model(x)
    got = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"image": x.numpy()})[0]
    return expected.abs().max(), abs(got - expected.numpy()).max()


def test_san_blocks_export_to_onnx_at_the_last_stage_size(tmp_path):
    """SAN's unfold forms in ONNX, patchwise and pairwise, kernel 7 on a 4x4 map (reflection padding 3:
    the last stage at 128 px) after kernel 3: onnxruntime within 1e-5 of PyTorch, at a batch size the
    export never saw."""
    from attnzoo.layers.san import SANBottleneck

    torch.manual_seed(0)
    model = torch.nn.Sequential(*(SANBottleneck(sa_type, 16, 2, 8, 16, share_planes=4, kernel_size=k)
                                  for sa_type, k in (("patchwise", 3), ("pairwise", 7), ("patchwise", 7))))
    largest, error = _onnxruntime_error(model, "san", (16, 4, 4), 64, tmp_path)
    assert largest > 0.1 and error <= 1e-5


def test_lesa_block_exports_to_onnx_for_any_batch_size(tmp_path):
    """LESA's eval path in ONNX: its relative-position skews as plain copies while torch.export traces
    (an exported as_strided view keeps the traced batch size), the eager path's results unchanged."""
    from attnzoo.layers.lesa import LESA

    torch.manual_seed(0)
    model = LESA(16, 16, fmap_size=5, groups=2)
    largest, error = _onnxruntime_error(model, "lesa", (16, 5, 5), 16, tmp_path)
    assert largest > 0.1 and error <= 1e-5
