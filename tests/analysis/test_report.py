"""run_analysis on a checkpoint written by the test, bias_columns, and the bad-input paths."""
import json

import pytest
import torch

import attnzoo
from attnzoo.analysis import AnalysisOptions, bias_columns, run_analysis
from attnzoo.data import build_data
from attnzoo.data.bundle import DataBundle
from attnzoo.data.memory import InMemoryDataset
from attnzoo.engine.checkpoint import save_weights
from attnzoo.engine.config import config_from_dict, config_to_dict, deep_merge
from attnzoo.errors import UserError

DATA = {"name": "synthetic", "options": {"num_train": 8, "num_test": 24}}


def _checkpoint(tmp_path, kwargs, data=DATA):
    cfg = config_from_dict({"name": "tiny", "model": {"name": "resnet_cifar", "kwargs": kwargs},
                            "data": data})
    torch.manual_seed(0)
    model = attnzoo.create_model("resnet_cifar", **kwargs)
    path = tmp_path / "run" / "checkpoints" / "best.safetensors"
    save_weights(path, model, config_to_dict(cfg))
    return path


def test_run_analysis_writes_report_json_and_figures(tmp_path):
    ckpt = _checkpoint(tmp_path, {"depth": 8, "attn": "se", "num_classes": 10})
    res = run_analysis(ckpt, batch_size=10, num_figures=4)
    out = tmp_path / "run" / "analysis"
    saved = json.loads((out / "bias.json").read_text())
    assert saved["num_images"] == 24 and saved["split"] == "test"
    for method in ("gradcam", "eigencam"):
        s = saved["bias"][method]
        assert s["all"]["n"] == 24 and s["correct"]["n"] + s["wrong"]["n"] == 24
        assert len(s["all"]["position_bias_rate"]) == len(s["thresholds"])
        rates = [s["all"][k + "@0.5"] for k in ("position_bias_rate", "range_bias_rate",
                                                  "contained_rate", "empty_rate")]
        assert sum(rates) == pytest.approx(1.0)
    assert set(saved["context"]["splits"]) == {"test", "test_swapped"}
    assert "swapped_gap" in saved["context"]
    assert set(saved["family"]["gates"]["stages"]) == {"layer1", "layer2", "layer3"}
    for fig in ("figures/maps.png", "figures/bias_curves.png", "figures/gates.png"):
        assert fig in saved["figures"] and (out / fig).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "position bias" in report and "swapped_gap" in report and "## Definitions" in report
    assert res["bias"]["gradcam"]["all"]["n"] == 24


def test_multilabel_maps_per_present_class_and_exclusive_split(tmp_path):
    data = {"name": "synthetic_multilabel", "options": {"num_train": 8, "num_test": 12, "num_classes": 6}}
    ckpt = _checkpoint(tmp_path, {"depth": 8, "num_classes": 6, "attn": "se"}, data)
    res = run_analysis(ckpt, out_dir=tmp_path / "out", methods=("gradcam",), num_figures=2)
    bundle = build_data(config_from_dict({"data": data}).data, train=False)
    present = int(bundle.evals["test"].targets.sum())
    assert res["num_maps"] == present and res["bias"]["gradcam"]["all"]["n"] == present
    assert "mAP" in res["context"]["splits"]["test"]
    assert res["context"]["exclusive_cooccur"]["pairs"]
    assert (tmp_path / "out" / "report.md").exists()
    stages = res["family"]["gates"]["stages"]
    assert set(stages) == {"layer1", "layer2", "layer3"} and "class_selectivity" not in stages["layer1"]


def _num_test(n):
    """data_overrides: the checkpoint's config with `n` test images per split."""
    return lambda cfg: config_from_dict(deep_merge(config_to_dict(cfg), {"data": {"options": {"num_test": n}}}))


def test_overrides_and_bad_input(tmp_path):
    ckpt = _checkpoint(tmp_path, {"depth": 8, "num_classes": 10})
    res = run_analysis(ckpt, out_dir=tmp_path / "o", data_overrides=_num_test(6),
                       methods=("eigencam",), split="test_swapped", num_samples=4, num_figures=0)
    assert res["split"] == "test_swapped" and res["num_images"] == 4
    options = AnalysisOptions(methods=("eigencam",), split="test_swapped", num_samples=4, num_figures=0)
    plain = run_analysis(ckpt, out_dir=tmp_path / "p", data_overrides=_num_test(6),
                         options=options, channels_last=False)  # keywords replace the options' fields
    a, b = res["bias"]["eigencam"]["all"], plain["bias"]["eigencam"]["all"]
    assert a["energy_in_box"] == pytest.approx(b["energy_in_box"], abs=1e-5) and a["iou"] == pytest.approx(b["iou"], abs=1e-4)
    with pytest.raises(UserError, match=r"\(9, 0\).*8x8"):
        run_analysis(ckpt, out_dir=tmp_path / "o", pixels=[(9, 0)])
    with pytest.raises(UserError, match="unknown split"):
        run_analysis(ckpt, out_dir=tmp_path / "o", split="val")
    with pytest.raises(UserError, match="gradcam\\+\\+.*gradcam"):
        run_analysis(ckpt, out_dir=tmp_path / "o", methods=("gradcam++",))
    with pytest.raises(TypeError, match="num_sample"):
        run_analysis(ckpt, out_dir=tmp_path / "o", num_sample=3)


def test_bias_columns_and_dataset_without_boxes():
    torch.manual_seed(0)
    model = attnzoo.create_model("resnet_cifar", depth=8, num_classes=10).eval()
    bundle = build_data(config_from_dict({"data": DATA}).data, train=False)
    cols = bias_columns(model, bundle, num_samples=16)
    assert set(cols) == {"energy_in_box", "pointing", "iou", "position_bias_rate",
                         "range_bias_rate", "swapped_gap"}
    assert 0 <= cols["energy_in_box"] <= 1 and 0 <= cols["position_bias_rate"] <= 1
    plain = InMemoryDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    no_boxes = DataBundle(train=None, evals={"test": plain}, num_classes=10, multilabel=False, img_size=32)
    with pytest.raises(UserError, match="no object boxes"):
        bias_columns(model, no_boxes)


def test_ida_network_gets_its_own_class_attention_map(tmp_path):
    import attnzoo.models.ida  # noqa: F401  (registers ida)

    kwargs = {"backbone": "resnet10t", "num_classes": 10, "num_heads": 2, "heavy": False}
    data = {"name": "synthetic", "img_size": 64, "options": {"num_train": 4, "num_test": 6}}
    cfg = config_from_dict({"name": "ida", "model": {"name": "ida", "kwargs": kwargs}, "data": data})
    torch.manual_seed(0)
    path = tmp_path / "run" / "checkpoints" / "best.safetensors"
    save_weights(path, attnzoo.create_model("ida", **kwargs), config_to_dict(cfg))
    res = run_analysis(path, methods=("gradcam",), num_figures=2)
    assert res["family"]["class_spatial"] is True
    assert set(res["bias"]) == {"gradcam", "ida"} and res["bias"]["ida"]["all"]["n"] == 6


def test_files_are_read_by_the_training_loader_and_unreadable_ones_refused(tmp_path):
    from PIL import Image

    from attnzoo.analysis.collect import predict
    from attnzoo.data.folder import ImageFolderDataset
    from attnzoo.data.transforms import image_transform

    Image.new("RGB", (20, 16), (200, 30, 30)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    samples = [(str(tmp_path / "a.png"), 0), (str(tmp_path / "b.png"), 1)]
    ds = ImageFolderDataset(samples, ["x", "y"], image_transform("none", 16, False), "folder/val")
    bundle = DataBundle(train=None, evals={"val": ds}, num_classes=2, multilabel=False, img_size=16)
    torch.manual_seed(0)
    model = attnzoo.create_model("resnet_cifar", depth=8, num_classes=2).eval()
    scores, targets = predict(model, ds, bundle, num_samples=1)  # the readable image, normalised
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (bundle.mean, bundle.std))
    x = (image_transform("none", 16, False)(Image.open(tmp_path / "a.png"))[None] / 255 - mean) / std  # uint8
    assert targets.tolist() == [0] and torch.allclose(scores, model(x), atol=1e-5)
    with pytest.warns(RuntimeWarning, match="unreadable"), pytest.raises(UserError, match="unreadable image"):
        predict(model, ds, bundle)
