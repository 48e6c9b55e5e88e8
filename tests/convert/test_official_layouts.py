"""Every converter against the official state-dict layouts, not against attnzoo's own.

The fixtures (tests/convert/fixtures/*.json) hold the key, shape and dtype of every tensor of
official networks, written once from the official code by `benchmarks/convert_fixtures.py`, with
the official repository's commit. Here each layout is filled with tensors (tensor i holds the value
i + 1, so every element says where it came from), converted with its converter for the attnzoo
network the fixture names, and checked strictly: exactly the network's keys, shapes and dtypes;
every official element lands exactly once (derived buffers the converter rebuilds excepted, and
those checked against the official values); the network loads the result with strict=True.
"""
import hashlib
import importlib
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

import attnzoo
from attnzoo.convert import CONVERTERS
from attnzoo.layers.lesa import relative_index

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def _official_state(layout: dict) -> tuple[dict, set]:
    """Tensors of the official layout: tensor i all i + 1; LESA's derived relative index its
    official values (checked by hash). Returns (state, keys of derived buffers)."""
    state, derived = {}, set()
    for i, (key, entry) in enumerate(layout.items()):
        dtype = getattr(torch, entry["dtype"])
        if "int64_sha256" in entry:  # LESA's flatten_index: the (HW*HW,) relative offsets
            assert key.endswith(".flatten_index")
            n = math.prod(entry["shape"])
            value = relative_index(math.isqrt(n)).flatten().to(dtype).reshape(entry["shape"])
            assert _sha(value) == entry["int64_sha256"], f"{key}: attnzoo's relative index is not the official one"
            derived.add(key)
        else:
            value = torch.full((), i + 1, dtype=dtype).expand(entry["shape"])  # no memory for its size
        state[key] = value
    return state, derived


def test_there_is_a_fixture_for_every_converter():
    fixtures = [json.loads(p.read_text()) for p in FIXTURES]
    assert {f["converter"] for f in fixtures} == set(CONVERTERS)
    assert all(len(f["commit"]) == 40 and f["made_by"] == "benchmarks/convert_fixtures.py" for f in fixtures)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_converter_on_the_official_layout(path):
    fixture = json.loads(path.read_text())
    converter = importlib.import_module(f"attnzoo.convert.{CONVERTERS[fixture['converter']]}")
    official, derived = _official_state(fixture["state_dict"])
    converted = converter.convert(dict(official), fixture["attnzoo_model"])

    with torch.device("meta"):
        model = attnzoo.create_model(fixture["attnzoo_model"], **fixture["attnzoo_kwargs"])
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in converted.items()}
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}

    # every official element once: counts of each tensor's mark in the output (a tensor passed on
    # unchanged counts whole; a new one, e.g. stacked from several, is read element by element)
    passed = {id(v): i + 1 for i, v in enumerate(official.values())}
    marks = Counter()
    for value in converted.values():
        if id(value) in passed:
            marks[passed[id(value)]] += value.numel()
            continue
        ids, counts = torch.unique(value, return_counts=True)
        marks.update(dict(zip(ids.tolist(), counts.tolist(), strict=True)))
    added = {k for k, v in converted.items() if not v.any()}  # IDA: step counters FrozenBatchNorm2d lacks
    assert all(k.endswith("num_batches_tracked") for k in added) and (not added or "ida" in path.stem)
    marks.pop(0, None)
    wanted = Counter({i + 1: math.prod(e["shape"]) for i, (k, e) in enumerate(fixture["state_dict"].items())
                      if k not in derived})
    assert marks == wanted
    model.load_state_dict(converted, strict=True, assign=True)
