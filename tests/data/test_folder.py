import warnings

import pytest
import torch
from PIL import Image

from attnzoo.data import build_data, build_loader, skipped_images
from attnzoo.engine.config import DataConfig
from attnzoo.errors import UserError


def make_folder(root, per_class=3, truncated=True):
    for split in ("train", "val"):
        for ci, c in enumerate(("cat", "dog")):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (20 + i, 18), (40 * ci, 100, 10 * i)).save(d / f"{i}.jpg")
    if truncated:
        full = (root / "train" / "dog" / "0.jpg").read_bytes()
        big = Image.effect_noise((64, 64), 50).convert("RGB")
        big.save(root / "train" / "dog" / "big.jpg", quality=95)
        data = (root / "train" / "dog" / "big.jpg").read_bytes()
        (root / "train" / "dog" / "broken.jpg").write_bytes(data[: len(data) // 2])
        (root / "train" / "dog" / "big.jpg").unlink()
        (root / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored: not an image suffix
        assert full


def test_imagefolder_skips_truncated_jpeg(tmp_path):
    make_folder(tmp_path)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), img_size=16, batch_size=7, workers=0,
                     augment="imagenet")
    b = build_data(cfg)
    assert b.num_classes == 2 and b.class_names == ["cat", "dog"] and len(b.train) == 7
    loader = build_loader(b.train, b, cfg, train=True, seed=0)
    loader.set_epoch(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    assert len(batches) == 1
    images, targets = batches[0]
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.float32 and targets.shape == (6,)
    assert loader.skipped_images == 1 and skipped_images(loader) == 1 and b.train.num_skipped == 1
    assert sum("broken.jpg" in str(w.message) for w in caught) == 1
    loader.set_epoch(1)
    list(loader)  # the same file again: still counted once, no second warning
    assert loader.skipped_images == 1
    ev = build_loader(b.evals["val"], b, cfg, train=False, seed=0)
    got = [t for _, t in ev]
    assert sum(len(t) for t in got) == 6 and ev.skipped_images == 0


def test_imagefolder_workers_and_determinism(tmp_path):
    make_folder(tmp_path, truncated=False)
    cfg = DataConfig(name="imagenet", root=str(tmp_path), img_size=12, batch_size=3, workers=2, cutout=5)
    b = build_data(cfg)
    assert b.train[0][0].dtype == torch.uint8  # workers hand uint8; the loader normalises on the device
    loader = build_loader(b.train, b, cfg, train=True, seed=5)
    loader.set_epoch(2)
    first = [x for x, _ in loader]
    workers = [w.pid for w in loader._loader._iterator._workers]
    assert all((x == 0).any() for x in first)  # cut out, after normalisation
    main = build_loader(b.train, b, DataConfig(name="imagenet", root=str(tmp_path), img_size=12, batch_size=3,
                                                workers=0, cutout=5), train=True, seed=5)
    main.set_epoch(2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    in_process = [x for x, _ in main]
    assert torch.equal(torch.rand(3), expected)  # the global generator is left untouched
    assert all(torch.equal(a, c) for a, c in zip(first, in_process, strict=True))  # same per-sample randomness
    loader.set_epoch(2)
    second = [x for x, _ in loader]
    assert len(first) == 2 and all(torch.equal(a, c) for a, c in zip(first, second, strict=True))
    assert [w.pid for w in loader._loader._iterator._workers] == workers  # one DataLoader, workers kept


def test_workers_auto_is_the_cores_of_each_process_less_one(monkeypatch):
    from attnzoo.data.loader import resolve_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers("auto") == 15 and resolve_workers(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_workers("auto") == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_workers("auto") == 0  # one core: the main process reads


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UserError, match="no data folder given"):
        build_data(DataConfig(name="imagefolder"))
    with pytest.raises(UserError, match="does not exist"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path / "nope")))
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match=r"val is missing; expected .*/train/<class>/<image>"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)))
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match="need at least 2"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)))
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(UserError, match="no images in"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)))


def test_cpu_batches_reuse_memory_only_once_released(tmp_path):
    # on the CPU the float batches are made in reused memory; a batch, or a view of one, that the
    # caller keeps must never be overwritten, and a loop that drops each batch reuses two buffers
    make_folder(tmp_path, per_class=6, truncated=False)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), img_size=8, batch_size=2, workers=0,
                     augment="imagenet")
    b = build_data(cfg)
    loader = build_loader(b.train, b, cfg, train=True, seed=0)
    loader.set_epoch(0)
    kept = [(x, x.clone()) for x, _ in loader]
    assert len(kept) == 6 and all(torch.equal(x, c) for x, c in kept)
    view, copy = kept[0][0][1].detach(), kept[0][1][1]  # the caller keeps a view of one batch only
    del kept
    loader.set_epoch(1)
    for x, _ in loader:
        assert x.data_ptr() != view.data_ptr()
    assert torch.equal(view, copy)
    del view
    addresses = set()
    loader.set_epoch(0)
    again = []
    for x, _ in loader:  # a training loop: each batch dropped for the next
        addresses.add(x.data_ptr())
        again.append(x.clone())
    assert len(addresses) == 2
    loader.set_epoch(0)
    assert all(torch.equal(a, x) for a, (x, _) in zip(again, loader, strict=True))  # same batches


def test_two_ranks_of_a_file_loader_give_the_single_process_batches(tmp_path):
    make_folder(tmp_path, per_class=4, truncated=False)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), img_size=8, batch_size=4, workers=0,
                     augment="imagenet", cutout=3)
    b = build_data(cfg)
    loaders = [build_loader(b.train, b, cfg, train=True, seed=3, rank=r, world_size=w) for r, w in ((0, 1), (0, 2), (1, 2))]
    for loader in loaders:
        loader.set_epoch(1)
    for (x, y), (x0, y0), (x1, y1) in zip(*loaders, strict=True):
        # rank r holds positions r, r + 2 of each global batch
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
