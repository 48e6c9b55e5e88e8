import torch
from PIL import Image

from attnzoo.data import BatchAugment, Cutout, image_transform
from attnzoo.data.transforms import cutout_mask, epoch_generator


def test_crop_flip_matches_padded_crop_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8)
    aug = BatchAugment("crop_flip", (10, 10), 10, (0.0,) * 3, (1 / 255,) * 3, train=True)
    p = aug.params(5, g)
    out = aug(images, p)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(5):
        oy, ox = int(p["oy"][i]), int(p["ox"][i])
        ref = padded[i, :, oy: oy + 10, ox: ox + 10]
        if p["flip"][i]:
            ref = ref.flip(2)
        assert torch.equal(out[i], ref.float())


def test_imagenet_batch_augment_and_cutout_shapes():
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    aug = BatchAugment("imagenet", (20, 20), 16, (0.5,) * 3, (0.25,) * 3, train=True, cutout=5, holes=2)
    p = aug.params(6, epoch_generator(0, 0))
    out = aug(images, p)
    assert out.shape == (6, 3, 16, 16) and torch.isfinite(out).all()
    mask = cutout_mask(p["cut"], 5, 16, 16)
    assert ((out == 0) | (mask == 1)).all()
    ev = BatchAugment("imagenet", (20, 20), 16, (0.5,) * 3, (0.25,) * 3, train=False)
    assert ev(images).shape == (6, 3, 16, 16)


def test_cutout_mask_clips_at_border():
    m = cutout_mask(torch.tensor([[[0, 0]]]), 4, 6, 6)
    assert m.shape == (1, 1, 6, 6) and int((m == 0).sum()) == 4  # 2x2 corner left after clipping


def test_per_image_cutout_tensor_and_pil():
    torch.manual_seed(0)
    x = torch.ones(3, 12, 12)
    y = Cutout(4, holes=2)(x)
    assert x.eq(1).all() and 4 <= int((y[0] == 0).sum()) <= 32
    img = Image.new("RGB", (12, 12), (255, 255, 255))
    out = Cutout(5, fill="random")(img)
    assert out.size == (12, 12) and out.tobytes() != img.tobytes()


def test_image_transform_sizes():
    img = Image.new("L", (30, 20), 128)
    for augment in ("none", "crop_flip", "imagenet"):
        for train in (True, False):
            t = image_transform(augment, 16, train)(img)
            assert t.shape == (3, 16, 16) and t.dtype == torch.uint8  # uint8 until the device
