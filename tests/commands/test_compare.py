"""`attnzoo compare`: aggregation over seeds, the table with the paper column, the plot, resuming
from existing summaries, the bias columns, bad input, and one real tiny comparison."""
import json
import math

import pytest

from attnzoo.commands import compare as cmp
from attnzoo.commands import compare_render, compare_stats
from attnzoo.engine.config import config_from_dict
from attnzoo.errors import UserError

from ..conftest import TINY_DATA, tiny_config


def _summary(top1, swapped, params=272474, img_s=1000.0):
    return {"best": {"test": {"top1": top1, "top5": 99.0, "loss": 0.5},
                     "test_swapped": {"top1": swapped, "top5": 90.0, "loss": 1.5}, "source": "model"},
            "final": {"test": {"top1": top1 - 1, "top5": 98.0, "loss": 0.6}},
            "params": params, "macs": 40813184, "train_img_per_s": img_s, "wall_time_s": 10.0,
            "seed": 0, "stopped": "completed"}


def _write_runs(out_dir, table: dict):
    """table: {model: [summary per seed]} written as out_dir/runs/<model>-s<seed>/summary.json."""
    for model, summaries in table.items():
        for seed, summary in enumerate(summaries):
            run = out_dir / "runs" / f"{model}-s{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps(summary))


def _never_called(cfg, **kwargs):
    raise AssertionError(f"{cfg.name} has a summary.json and must not be trained again")


def _compare(*args, **kwargs):
    return cmp.compare(*args, quiet=True, **kwargs)


def _base(**extra):
    return config_from_dict({"name": "rec", "model": {"name": "resnet56_cifar"}, **extra})


def test_mean_std_and_flat_metrics():
    stat = compare_stats.mean_std([80.0, 82.0, 84.0])
    assert stat["mean"] == 82.0 and math.isclose(stat["std"], 2.0) and stat["n"] == 3
    assert compare_stats.mean_std([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1, "values": [5.0]}
    flat = compare_stats.flat_metrics(_summary(80, 60), bias={"energy_in_box": 0.4, "note": "x"})
    assert flat["best.test.top1"] == 80 and flat["best.test_swapped.top1"] == 60
    assert flat["final.test.top1"] == 79 and flat["bias.energy_in_box"] == 0.4
    assert "best.source" not in flat and "bias.note" not in flat and "seed" not in flat
    assert {"params", "macs", "train_img_per_s", "wall_time_s"} <= set(flat)
    assert compare_stats.flat_metrics({"best": {"mAP": 71.0}})["best.mAP"] == 71.0  # flat (no split level)
    assert compare_stats.primary_split(_summary(1, 1)) == "test"


def test_compare_reuses_summaries_and_writes_table_json_plot(tmp_path):
    _write_runs(tmp_path, {"resnet20_cifar": [_summary(80, 60), _summary(82, 62)],
                           "resnet56_cifar": [_summary(85, 70, params=855770),
                                              _summary(87, 74, params=855770)]})
    base = _base(paper={"top1": 93.03, "params": "0.85M", "flops": "125M", "top9": 1.0,
                        "source": "He et al. 2016."})
    res = _compare(["resnet20_cifar", "resnet56_cifar"], [0, 1], base, tmp_path, train_fn=_never_called)
    assert all(r["reused"] for r in res["runs"]) and len(res["runs"]) == 4
    agg = res["aggregate"]
    assert agg["resnet20_cifar"]["best.test.top1"]["mean"] == 81.0
    assert math.isclose(agg["resnet56_cifar"]["best.test_swapped.top1"]["std"], math.sqrt(8))
    assert res["primary_split"] == "test" and res["recipe_model"] == "resnet56_cifar"

    on_disk = json.loads((tmp_path / "comparison.json").read_text())
    assert on_disk["aggregate"]["resnet56_cifar"]["params"]["mean"] == 855770
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "comparison.md").read_text()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| metric"))
    # the paper column sits right after the recipe's own model
    assert header == "| metric | resnet20_cifar | resnet56_cifar | paper (resnet56_cifar) |"
    row = next(line for line in lines if line.startswith("| best test top1 "))
    assert row == "| best test top1 | 81.00 ± 1.41 | 86.00 ± 1.41 | 93.03 |"
    assert next(line for line in lines if line.startswith("| params ")).endswith("| 855.77K | 0.85M |")
    assert next(line for line in lines if line.startswith("| MACs")).endswith("| 125M |")
    assert "| paper top9 |" in md and "Paper numbers: He et al. 2016." in md
    order = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:]
    assert order.index("best test top1") < order.index("best test loss") \
        < order.index("best test_swapped top1")
    assert order.index("final test top1") < order.index("params") < order.index("train img/s")


def test_table_without_paper_and_single_seed(tmp_path):
    _write_runs(tmp_path, {"resnet20_cifar": [_summary(80, 60)]})
    res = _compare(["resnet20_cifar"], [0], _base(), tmp_path, train_fn=_never_called)
    md = compare_render.format_comparison(res)
    assert "paper" not in md.split("\n| metric")[1]
    assert "| best test top1 | 80.00 |" in md  # one seed: no ± shown


def test_missing_runs_are_trained_with_resume_and_the_run_config(tmp_path):
    _write_runs(tmp_path, {"resnet20_cifar": [_summary(80, 60)]})
    calls = []

    def fake_train(cfg, resume=None, quiet=False):
        calls.append((cfg.name, cfg.model.name, cfg.train.seed, cfg.out_dir, resume, quiet))
        summary = _summary(70 + cfg.train.seed, 50)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    base = _base(data=dict(TINY_DATA), train={"seed": 123})
    res = _compare(["resnet20_cifar"], [0, 1], base, tmp_path, train_fn=fake_train)
    assert calls == [("resnet20_cifar-s1", "resnet20_cifar", 1, str(tmp_path / "runs"), "auto", True)]
    assert [r["reused"] for r in res["runs"]] == [True, False]
    assert base.train.seed == 123 and base.model.name == "resnet56_cifar"  # base left unchanged
    _compare(["resnet20_cifar"], [0, 1], base, tmp_path, train_fn=_never_called)  # now all done


def test_diverged_run_is_recorded_and_the_rest_goes_on(tmp_path):
    from attnzoo.engine.train import TrainingDiverged

    def train_fn(cfg, **kwargs):
        if cfg.train.seed == 1:
            raise TrainingDiverged("loss became nan")
        return _summary(80, 60)

    res = _compare(["resnet20_cifar"], [0, 1], _base(), tmp_path, train_fn=train_fn)
    assert [r["seed"] for r in res["runs"]] == [0] and res["failed"][0]["seed"] == 1
    assert "Runs without results: resnet20_cifar seed 1." in (tmp_path / "comparison.md").read_text()


def test_bias_columns_join_the_table(tmp_path):
    _write_runs(tmp_path, {"resnet20_cifar": [_summary(80, 60), _summary(82, 62)]})
    for seed, value in enumerate((0.25, 0.35)):  # cached columns of each run
        cache = tmp_path / "runs" / f"resnet20_cifar-s{seed}" / "analysis" / "bias_columns.json"
        cache.parent.mkdir(parents=True)
        cache.write_text(json.dumps({"energy_in_box": value, "position_bias_rate": 0.1}))
    res = _compare(["resnet20_cifar"], [0, 1], _base(), tmp_path, analyze=True, train_fn=_never_called)
    assert math.isclose(res["aggregate"]["resnet20_cifar"]["bias.energy_in_box"]["mean"], 0.3)
    assert "| bias energy_in_box | 0.3000 ± 0.0707 |" in (tmp_path / "comparison.md").read_text()


@pytest.mark.parametrize("models, seeds, match", [
    ([], [0], "at least one model"),
    (["resnet20_cifar", "resnet20_cifar"], [0], "named twice"),
    (["resnet20_cifarx"], [0], "unknown model 'resnet20_cifarx'"),
    (["resnet20_cifar+lsas"], [0], "'lsas'.*attention block.*lsas_se"),
    (["resnet20_cifar"], [], "at least one seed"),
    (["resnet20_cifar"], [0, 0], "seed is given twice"),
    (["resnet20_cifar"], ["a"], "seeds must be integers"),
])
def test_bad_input_is_rejected_before_training(tmp_path, models, seeds, match):
    with pytest.raises(UserError, match=match):
        _compare(models, seeds, _base(), tmp_path, train_fn=_never_called)


def test_real_tiny_comparison_with_the_training_engine(tmp_path):
    """Two networks, one seed each, 1 epoch on 64 synthetic images, with the real `train`
    (the recipe's depth=8 goes to both constructors, to keep it fast)."""
    base = tiny_config(tmp_path / "unused", schedule={"epochs": 1}, name="tiny_recipe",
                       model={"name": "resnet20_cifar"}, paper={"top1": 50.0, "source": "made up"})
    res = _compare(["resnet_cifar", "resnet20_cifar"], [0], base, tmp_path)
    assert [r["reused"] for r in res["runs"]] == [False, False]
    for run in res["runs"]:
        assert 0 <= run["metrics"]["best.test.top1"] <= 100 and run["metrics"]["macs"] > 0
        assert (tmp_path / "runs" / f"{run['model']}-s0" / "summary.json").is_file()
    md = (tmp_path / "comparison.md").read_text()
    assert "| metric | resnet_cifar | resnet20_cifar | paper (resnet20_cifar) |" in md
    assert "| best test_swapped top1 |" in md and "| MACs / image |" in md
    # resumed: nothing is trained again; --analyze adds the real bias columns of the best checkpoints
    again = _compare(["resnet_cifar", "resnet20_cifar"], [0], base, tmp_path, analyze=True)
    assert all(r["reused"] for r in again["runs"])
    for model in ("resnet_cifar", "resnet20_cifar"):
        agg = again["aggregate"][model]
        assert agg["best.test.top1"] == res["aggregate"][model]["best.test.top1"]
        assert 0 <= agg["bias.energy_in_box"]["mean"] <= 1
        assert (tmp_path / "runs" / f"{model}-s0" / "analysis" / "bias_columns.json").is_file()
    assert "| bias position_bias_rate |" in (tmp_path / "comparison.md").read_text()


def test_host_and_block_rows_name_each_column(tmp_path):
    _write_runs(tmp_path, {"resnet18": [_summary(80, 60)], "resnet18+lsas_se": [_summary(81, 62)]})
    res = _compare(["resnet18", "resnet18+lsas_se"], [0], _base(), tmp_path, train_fn=_never_called)
    assert res["hosts"] == {"resnet18": {"host": "resnet18", "block": None},
                            "resnet18+lsas_se": {"host": "resnet18", "block": "lsas_se"}}
    lines = (tmp_path / "comparison.md").read_text().splitlines()
    at = lines.index("| metric | resnet18 | resnet18+lsas_se |")
    assert lines[at + 2:at + 4] == ["| host | resnet18 | resnet18 |", "| inserted block | - | lsas_se |"]
    # without inserted blocks the table has no such rows
    _write_runs(tmp_path / "plain", {"resnet18": [_summary(80, 60)]})
    _compare(["resnet18"], [0], _base(), tmp_path / "plain", train_fn=_never_called)
    assert "| host |" not in (tmp_path / "plain" / "comparison.md").read_text()


def test_real_tiny_comparison_of_blocks_on_one_host(tmp_path):
    """resnet_cifar (depth 8) with and without SE, and the recipe's own model.attn: trained and
    rebuilt from their best checkpoints with the inserted blocks."""
    from attnzoo.engine.checkpoint import load_model
    from attnzoo.layers import LSAS, SE

    base = tiny_config(tmp_path / "unused", schedule={"epochs": 1}, name="tiny_recipe")
    res = _compare(["resnet_cifar", "resnet_cifar+se"], [0], base, tmp_path)
    assert res["aggregate"]["resnet_cifar+se"]["params"]["mean"] > res["aggregate"]["resnet_cifar"]["params"]["mean"]
    model, _ = load_model(tmp_path / "runs" / "resnet_cifar+se-s0" / "checkpoints" / "best.safetensors")
    assert sum(isinstance(m, SE) for m in model.modules()) == 3

    attn = tiny_config(tmp_path / "unused", schedule={"epochs": 1}, name="attn_recipe",
                       model={"attn": "lsas_se", "attn_kwargs": {"order": 2, "rd_ratio": 0.25},
                              "attn_stages": [3]})
    res = _compare(["resnet_cifar"], [0], attn, tmp_path / "attn")
    assert res["hosts"]["resnet_cifar"] == {"host": "resnet_cifar", "block": "lsas_se"}
    model, _ = load_model(tmp_path / "attn" / "runs" / "resnet_cifar-s0" / "checkpoints" / "best.safetensors")
    gates = [n for n, m in model.named_modules() if isinstance(m, LSAS)]
    assert gates == ["layer3.0.attn"] and model.layer3[0].attn.order == 2


@pytest.mark.parametrize("model, match", [
    ({"attn": "lsas"}, "unknown attention block 'lsas'"),
    ({"attn_kwargs": {"order": 2}}, "model.attn_kwargs.*model.attn"),
    ({"name": "resnet18+se", "attn": "sb"}, "'host\\+block'.*model.attn"),
    ({"attn": "se", "attn_position": "middle"}, "model.attn_position.*'middle'"),
])
def test_attention_keys_of_the_config_are_checked(model, match):
    with pytest.raises(UserError, match=match):
        config_from_dict({"model": model})
