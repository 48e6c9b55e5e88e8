import pytest
import torch

from attnzoo.data import build_data, dataset_names
from attnzoo.data.synthetic import NUM_CONTEXTS, generate_multilabel, generate_single
from attnzoo.engine.config import DataConfig
from attnzoo.errors import UserError


def test_single_shapes_determinism_and_boxes():
    a = generate_single(64, 32, "train", seed=3)
    b = generate_single(64, 32, "train", seed=3)
    c = generate_single(64, 32, "train", seed=4)
    assert a.images.shape == (64, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert a.targets.dtype == torch.int64 and int(a.targets.min()) >= 0 and int(a.targets.max()) < 10
    for i in range(64):
        box = a.boxes[i]
        assert box.shape == (1, 4)
        x0, y0, x1, y1 = box[0].tolist()
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
        assert (x1 - x0) >= 4 and (y1 - y0) >= 4


def test_box_is_exact_tight_box_of_drawn_pixels():
    from attnzoo.data.synthetic import _draw_objects

    n, S = 10, 40
    img = torch.zeros(n, 3, S, S)
    p = {"r": torch.full((n,), 9.0), "theta": torch.linspace(-0.4, 0.4, n), "colour": torch.ones(n, 3),
         "tex_freq": torch.full((n,), 4.0), "tex_angle": torch.zeros(n), "tex_phase": torch.zeros(n)}
    cls = torch.arange(n)
    boxes = _draw_objects(img, cls, torch.full((n,), 15.0), torch.full((n,), 22.0), p,
                          torch.zeros(n, 3), torch.ones(n, dtype=torch.bool))
    for i in range(n):
        drawn = img[i].sum(0) > 0
        ys, xs = drawn.any(1).nonzero().squeeze(1), drawn.any(0).nonzero().squeeze(1)
        expected = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        assert boxes[i].tolist() == expected


def test_context_splits():
    n = 400
    train = generate_single(n, 16, "train", seed=0, context_bias=0.8)
    own = train.targets % NUM_CONTEXTS
    frac = (train.contexts == own).float().mean().item()
    assert 0.7 < frac < 0.9
    test = generate_single(50, 16, "test", seed=0)
    assert torch.equal(test.contexts, test.targets % NUM_CONTEXTS)
    swapped = generate_single(50, 16, "test_swapped", seed=0)
    assert (swapped.contexts != swapped.targets % NUM_CONTEXTS).all()


def test_any_size_and_many_classes():
    d = generate_single(6, 64, "train", seed=0, num_classes=100)
    assert d.images.shape == (6, 3, 64, 64)
    big = generate_single(300, 16, "train", seed=0, num_classes=100)
    assert int(big.targets.max()) >= 50


def test_multilabel_targets_and_boxes():
    d = generate_multilabel(200, 32, "train", seed=0, num_classes=20)
    assert d.targets.shape == (200, 20) and d.targets.dtype == torch.float32
    k = d.targets.sum(dim=1)
    assert int(k.min()) >= 1 and int(k.max()) <= 4
    assert torch.equal(d.boxes.counts, k.long())
    for i in range(10):
        boxes = d.boxes[i]
        assert boxes.shape == (int(k[i]), 4)
        assert sorted(d.box_labels[i].tolist()) == d.targets[i].nonzero().squeeze(1).tolist()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # co-occurrence: a partner pair appears together far more often than chance
    t = d.targets.bool()
    pair = (t[:, 0] & t[:, 1]).float().sum() / t[:, 0].float().sum()
    assert pair > 0.3
    again = generate_multilabel(200, 32, "train", seed=0, num_classes=20)
    assert torch.equal(again.images, d.images)


def test_build_data_bundle_and_options():
    cfg = DataConfig(name="synthetic", options={"num_train": 20, "num_test": 10, "seed": 2}, img_size=24)
    b = build_data(cfg)
    assert b.num_classes == 10 and not b.multilabel and b.has_boxes and b.img_size == 24
    assert list(b.evals) == ["test", "test_swapped"] and len(b.train) == 20
    image, target = b.train[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and target.dim() == 0
    only_eval = build_data(cfg, train=False)
    assert only_eval.train is None and torch.equal(only_eval.evals["test"].images, b.evals["test"].images)
    ml = build_data(DataConfig(name="synthetic_multilabel", options={"num_train": 8, "num_test": 4}))
    assert ml.multilabel and ml.num_classes == 20
    assert "synthetic" in dataset_names() and "coco" in dataset_names()


@pytest.mark.parametrize("options, text", [
    ({"num_trian": 5}, "num_trian"),
    ({"context_bias": 1.5}, "context_bias"),
    ({"num_train": "many"}, "num_train"),
])
def test_bad_options(options, text):
    with pytest.raises(UserError, match=text):
        build_data(DataConfig(name="synthetic", options=options))


def test_unknown_dataset():
    with pytest.raises(UserError, match="valid: .*cifar10"):
        build_data(DataConfig(name="cifar11"))
