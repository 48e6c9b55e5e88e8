import torch

from attnzoo.data import DataBundle, InMemoryDataset, build_loader
from attnzoo.engine.config import DataConfig


def _bundle(n=40, size=8, img_size=None):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    ds = InMemoryDataset(images, torch.arange(n))
    b = DataBundle(train=ds, evals={"test": ds}, num_classes=n, multilabel=False, img_size=img_size or size,
                   mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    return ds, b


def _ids(loader):
    return [t.tolist() for _, t in loader]


def test_train_shards_are_disjoint_and_cover_the_global_batches():
    ds, b = _bundle(40)
    cfg = DataConfig(batch_size=8)
    single = build_loader(ds, b, cfg, train=True, seed=1)
    r0 = build_loader(ds, b, cfg, train=True, seed=1, rank=0, world_size=2)
    r1 = build_loader(ds, b, cfg, train=True, seed=1, rank=1, world_size=2)
    assert len(single) == len(r0) == len(r1) == 5 and r0.batch_size == 4
    for epoch in (0, 3):
        for ld in (single, r0, r1):
            ld.set_epoch(epoch)
        for whole, a, c in zip(_ids(single), _ids(r0), _ids(r1), strict=True):
            assert not set(a) & set(c)
            assert sorted(a + c) == sorted(whole)
    # the same sample gets the same augmentation whatever the number of processes
    cfg_aug = DataConfig(batch_size=8, augment="crop_flip", cutout=3)
    one = build_loader(ds, b, cfg_aug, train=True, seed=1)
    two = build_loader(ds, b, cfg_aug, train=True, seed=1, rank=1, world_size=2)
    x1, y1 = next(iter(one))
    x2, y2 = next(iter(two))
    for i, t in enumerate(y2.tolist()):
        j = y1.tolist().index(t)
        assert torch.equal(x2[i], x1[j])


def test_train_drops_last_and_eval_sees_every_sample_once():
    ds, b = _bundle(23)
    cfg = DataConfig(batch_size=4, eval_batch_size=6)
    tr = build_loader(ds, b, cfg, train=True, seed=0)
    assert len(tr) == 5 and sum(len(t) for _, t in tr) == 20
    shards = [build_loader(ds, b, cfg, train=False, seed=0, rank=r, world_size=2) for r in range(2)]
    seen = [t for s in shards for _, t in s]
    flat = torch.cat(seen).tolist()
    assert sorted(flat) == list(range(23))
    assert _ids(shards[0])[0] == [0, 2, 4]  # in order, r::world_size, eval batch split over ranks
    assert len(shards[0]) == 4 and len(shards[1]) == 4


def test_order_depends_only_on_seed_and_epoch():
    ds, b = _bundle(32)
    cfg = DataConfig(batch_size=8, cutout=4)
    a = build_loader(ds, b, cfg, train=True, seed=7)
    c = build_loader(ds, b, cfg, train=True, seed=7)
    a.set_epoch(4)
    c.set_epoch(4)
    xa = [x for x, _ in a]
    xc = [x for x, _ in c]
    assert all(torch.equal(p, q) for p, q in zip(xa, xc, strict=True))
    c.set_epoch(5)
    assert _ids(a) != _ids(c)
    d = build_loader(ds, b, cfg, train=True, seed=8)
    d.set_epoch(4)
    a.set_epoch(4)
    assert _ids(a) != _ids(d)
    # resuming inside an epoch replays its remaining batches exactly
    a.set_epoch(4)
    full = [(x, y) for x, y in a]
    a.set_epoch(4, skip_batches=2)
    rest = [(x, y) for x, y in a]
    assert len(rest) == len(full) - 2
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(full[2:], rest, strict=True))


def test_output_is_normalised_float_at_bundle_size():
    ds, b = _bundle(16, size=8, img_size=12)
    for augment in ("none", "crop_flip", "imagenet"):
        cfg = DataConfig(batch_size=4, augment=augment)
        for train in (True, False):
            x, y = next(iter(build_loader(ds, b, cfg, train=train, seed=0)))
            assert x.shape[1:] == (3, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    # no augmentation and no resize: the pixel values pass through exactly (mean 0, std 1/255)
    ds, b = _bundle(8)
    x, y = next(iter(build_loader(ds, b, DataConfig(batch_size=4, augment="none"), train=False, seed=0)))
    assert torch.allclose(x[:, 0, 0, 0], y.float())
