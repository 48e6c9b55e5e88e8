"""Shared fixtures: tiny configs that train in about a second on one CPU core."""
import os
from pathlib import Path

import pytest
import timm.layers
import torch
import torchvision.models.feature_extraction as tv_fx

ROOT = Path(__file__).resolve().parents[1]

# the two feature extractors, name -> (get_graph_node_names, create_feature_extractor)
EXTRACTORS = {
    "timm": (timm.layers.get_graph_node_names, timm.layers.create_feature_extractor),  # with timm's leaves
    "torchvision": (tv_fx.get_graph_node_names, tv_fx.create_feature_extractor),  # a plain torch.fx tracer
}
TINY_DATA = {"name": "synthetic", "batch_size": 16, "workers": 0,
             "options": {"num_train": 64, "num_test": 32}}


def tiny_config(tmp_path, **sections):
    """A Config for resnet_cifar depth 8 on 64 synthetic images; `sections` override keys."""
    from attnzoo.engine.config import config_from_dict, deep_merge

    base = {"name": "tiny", "out_dir": str(tmp_path / "runs"),
            "model": {"name": "resnet_cifar", "kwargs": {"depth": 8}},
            "data": dict(TINY_DATA),
            "optim": {"name": "sgd", "lr": 0.05},
            "schedule": {"name": "cosine", "epochs": 2},
            "train": {"seed": 0, "deterministic": True, "device": "cpu"}}
    return config_from_dict(deep_merge(base, sections))


def child_env(**extra) -> dict:
    """The environment of a child process that imports attnzoo from this checkout, on one thread."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield
