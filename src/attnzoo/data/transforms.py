"""Augmentation: batched on whole uint8 batches for in-memory data, per image for files.

Batched path (`BatchAugment`): the random parameters of every sample of an epoch (crop offset,
flip, random-resized-crop box, cutout centres) are drawn up front from one generator seeded from
(seed, epoch), indexed by the sample's position in the epoch's order, then applied to a whole
batch with a few tensor operations (gather, roi_align, interpolate). Output is float32 NCHW,
normalised with the dataset's mean and std, at the requested size.

Per-image path (`image_transform`, `Cutout`): torchvision transforms for datasets read from files,
ending in uint8; their randomness comes from torch's global generator, which the file loader seeds
per sample. Normalisation and cutout of those batches run on the device (`normalise_`, `cutout_mask`).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop_flip", "imagenet")
CROP_PADDING = 4
EVAL_CROP_FRACTION = 224 / 256  # imagenet evaluation: resize to size/0.875, center crop size


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of everything random in one epoch (order and augmentation)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 1) % (2 ** 63))


def normalise_(x: torch.Tensor, mean, std, scale: float = 1.0) -> torch.Tensor:
    """(x * scale - mean) / std per channel of an (N, C, H, W) float tensor, in place."""
    factor, shift = _factor_shift(tuple(map(float, mean)), tuple(map(float, std)), scale, x.dtype, x.device)
    return x.mul_(factor).sub_(shift)  # two vectorised passes (addcmul with broadcasting is slower)


@functools.lru_cache(maxsize=32)
def _factor_shift(mean: tuple, std: tuple, scale: float, dtype: torch.dtype, device: torch.device):
    """(scale / std, mean / std), (1, C, 1, 1) on `device`: made once, since a tensor made from
    Python numbers on a GPU is a copy the host waits for (a sync per batch otherwise)."""
    m = torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(1, -1, 1, 1)
    return (scale / s).to(device), (m / s).to(device)


def cutout_mask(centres: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """Keep-mask (N, 1, H, W) float: 0 inside the square holes of side `size`, 1 elsewhere.

    `centres` (N, holes, 2) are (y, x) pixel centres; a hole spans [c - size//2, c - size//2 + size)
    clipped at the border, as in DeVries & Taylor (2017).
    """
    n = centres.shape[0]
    dev = centres.device
    y0 = centres[..., 0] - size // 2
    x0 = centres[..., 1] - size // 2
    ys = torch.arange(height, device=dev)
    xs = torch.arange(width, device=dev)
    in_y = (ys[None, None, :] >= y0[..., None]) & (ys[None, None, :] < y0[..., None] + size)  # (N, holes, H)
    in_x = (xs[None, None, :] >= x0[..., None]) & (xs[None, None, :] < x0[..., None] + size)  # (N, holes, W)
    hole = (in_y[..., :, None] & in_x[..., None, :]).any(dim=1)  # (N, H, W)
    return (~hole).to(torch.float32).view(n, 1, height, width)


class BatchAugment:
    """Batched augmentation of uint8 image batches (N, C, H, W) -> float32 (N, C, S, S) normalised.

    Modes (`augment`): "crop_flip" random crop of the source size from the image zero-padded by 4
    pixels, horizontal flip with p=0.5, then resize to `out_size` if it differs; "imagenet"
    random-resized crop (scale 0.08-1, ratio 3/4-4/3) to `out_size` + flip; "none" resize only.
    Evaluation (`train=False`): resize to `out_size` ("imagenet": center crop of 0.875 of the side
    first). Cutout (`cutout` > 0, train only) zeroes `holes` squares after normalisation.
    """

    def __init__(self, augment: str, src_size: tuple, out_size: int, mean, std, train: bool,
                 cutout: int = 0, holes: int = 1):
        self.center_crop = (not train) and augment == "imagenet"
        if augment not in AUGMENTS:
            raise ValueError(f"augment '{augment}' not in {AUGMENTS}")
        self.augment = augment if train else "eval"
        self.src_h, self.src_w = src_size
        self.out = out_size
        self.mean, self.std = mean, std
        self.cutout = cutout if train else 0
        self.holes = holes

    def params(self, n: int, g: torch.Generator) -> dict:
        """Random parameters of `n` samples (positions 0..n-1 of an epoch)."""
        p = {}
        if self.augment == "crop_flip":
            p["oy"] = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=g)
            p["ox"] = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=g)
            p["flip"] = torch.rand(n, generator=g) < 0.5
        elif self.augment == "imagenet":
            area = self.src_h * self.src_w * (0.08 + 0.92 * torch.rand(n, generator=g))
            logr = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=g)
            ratio = torch.exp(logr)
            w = torch.sqrt(area * ratio).clamp(1, self.src_w)
            h = torch.sqrt(area / ratio).clamp(1, self.src_h)
            x0 = (self.src_w - w) * torch.rand(n, generator=g)
            y0 = (self.src_h - h) * torch.rand(n, generator=g)
            p["box"] = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
            p["flip"] = torch.rand(n, generator=g) < 0.5
        if self.cutout > 0:
            p["cut"] = torch.randint(0, self.out, (n, self.holes, 2), generator=g)
        return p

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.out, self.out):
            return x
        down = x.shape[-1] > self.out or x.shape[-2] > self.out
        return F.interpolate(x, size=(self.out, self.out), mode="bilinear", align_corners=False, antialias=down)

    def __call__(self, images: torch.Tensor, p: Optional[dict] = None) -> torch.Tensor:
        """Augment one batch; `p` holds this batch's rows of `params` (None for evaluation)."""
        n, c, h, w = images.shape
        dev = images.device
        p = {k: v.to(dev) for k, v in (p or {}).items()}
        if self.augment == "crop_flip":
            # source row/column of every output pixel; positions outside the image read a zero
            # sentinel appended after the last pixel (the padding), so one gather does crop + flip
            ar_h = torch.arange(h, device=dev)
            ar_w = torch.arange(w, device=dev)
            rows = p["oy"][:, None] - CROP_PADDING + ar_h[None]  # (N, H)
            cols = p["ox"][:, None] - CROP_PADDING + ar_w[None]  # (N, W)
            cols = torch.where(p["flip"][:, None], cols.flip(1), cols)
            valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
            idx = torch.where(valid, rows[:, :, None] * w + cols[:, None, :], h * w)  # (N, H, W)
            flat = torch.cat([images.reshape(n, c, h * w), images.new_zeros(n, c, 1)], dim=2)
            x = torch.gather(flat, 2, idx.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
            x = x.float()
            x = self._resize(x)
        elif self.augment == "imagenet":
            from torchvision.ops import roi_align

            boxes = torch.cat([torch.arange(n, device=dev, dtype=torch.float32)[:, None], p["box"].float()], dim=1)
            x = roi_align(images.float(), boxes, output_size=(self.out, self.out), spatial_scale=1.0,
                          sampling_ratio=2, aligned=True)
            x = torch.where(p["flip"][:, None, None, None], x.flip(3), x)
        elif self.center_crop:
            x = self._center_crop(images.float())
        else:
            x = self._resize(images.float())
        x = normalise_(x, self.mean, self.std, scale=1 / 255)
        if self.cutout > 0:
            x.mul_(cutout_mask(p["cut"], self.cutout, self.out, self.out))
        return x

    def _center_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h * EVAL_CROP_FRACTION)), max(1, round(w * EVAL_CROP_FRACTION))
        top, left = (h - ch) // 2, (w - cw) // 2
        return self._resize(x[..., top: top + ch, left: left + cw])


# -------------------------------------------------------------------------------- per-image path

class Cutout:
    """Per-image cutout: `holes` squares of side `size` at uniformly random centres, clipped at the
    border, filled with `fill` (DeVries & Taylor, 2017).

    Works on a tensor (C, H, W) (fill is a number, or "random": one uniform colour in [0, 1] per
    hole, for images not yet normalised) and on a PIL image (fill a number in 0-255 or "random").
    Randomness comes from torch's global generator. Returns a new image; the input is not changed.
    """

    def __init__(self, size: int, holes: int = 1, fill=0.0):
        if size < 1 or holes < 1:
            raise ValueError(f"Cutout needs size >= 1 and holes >= 1, got size={size}, holes={holes}")
        self.size, self.holes, self.fill = int(size), int(holes), fill

    def __call__(self, img):
        if isinstance(img, torch.Tensor):
            h, w = img.shape[-2:]
            out = img.clone()
            for _ in range(self.holes):
                y0, x0 = self._corner(h, w)
                if self.fill == "random":
                    colour = torch.rand(out.shape[0], 1, 1)
                    if not out.is_floating_point():
                        colour = (colour * 255).round()
                    out[:, y0: y0 + self.size, x0: x0 + self.size] = colour.to(out.dtype)
                else:
                    out[:, y0: y0 + self.size, x0: x0 + self.size] = self.fill
            return out
        from PIL import ImageDraw

        out = img.copy()
        draw = ImageDraw.Draw(out)
        w, h = out.size
        for _ in range(self.holes):
            y0, x0 = self._corner(h, w)
            if self.fill == "random":
                colour = tuple(int(v) for v in torch.randint(0, 256, (len(out.getbands()),)))
            else:
                colour = tuple(int(self.fill) for _ in out.getbands())
            draw.rectangle([max(x0, 0), max(y0, 0), min(x0 + self.size, w) - 1, min(y0 + self.size, h) - 1],
                           fill=colour if len(colour) > 1 else colour[0])
        return out

    def _corner(self, h: int, w: int):
        cy = int(torch.randint(0, h, (1,)))
        cx = int(torch.randint(0, w, (1,)))
        y0 = max(cy - self.size // 2, 0)
        x0 = max(cx - self.size // 2, 0)
        return y0, x0  # slicing clips the far side: a hole at a border is smaller, as in the method

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, holes={self.holes}, fill={self.fill!r})"


def image_transform(augment: str, img_size: int, train: bool):
    """torchvision transform for one PIL image -> uint8 tensor (3, img_size, img_size).

    train "imagenet": RandomResizedCrop + flip; train "crop_flip": resize (short side) + center
    crop + RandomCrop(padding 4) + flip; "none" and evaluation: resize + center crop; evaluation
    "imagenet": resize to img_size / 0.875 then center crop (256 -> 224 at the standard size).
    Images travel as uint8 (a quarter of float32's bytes through the workers' shared memory and
    the copy to the device); the loader converts and normalises each batch on the device.
    """
    from torchvision import transforms as T

    if train and augment == "imagenet":
        ops = [T.RandomResizedCrop(img_size), T.RandomHorizontalFlip()]
    elif train and augment == "crop_flip":
        ops = [T.Resize(img_size), T.CenterCrop(img_size), T.RandomCrop(img_size, padding=CROP_PADDING),
               T.RandomHorizontalFlip()]
    elif augment == "imagenet":
        ops = [T.Resize(int(round(img_size / EVAL_CROP_FRACTION))), T.CenterCrop(img_size)]
    else:
        ops = [T.Resize(img_size), T.CenterCrop(img_size)]
    return T.Compose([ToRGB(), *ops, T.PILToTensor()])


class ToRGB:
    """PIL image in any mode (grey, palette, CMYK, RGBA) -> RGB."""

    def __call__(self, img):
        return img.convert("RGB") if img.mode != "RGB" else img

    def __repr__(self) -> str:
        return "ToRGB()"
