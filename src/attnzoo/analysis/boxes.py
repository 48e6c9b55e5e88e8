"""Ground-truth boxes: readers for the common formats, geometry, and batched pixel masks.

A box is (x0, y0, x1, y1) in pixels of the image it belongs to, x to the right, y down; pixel
(row i, column j) covers [j, j+1) x [i, i+1) and belongs to a box when its centre (j+0.5, i+0.5)
lies inside [x0, x1) x [y0, y1).

Readers and helpers (a reader raises UserError with one line on a missing or malformed file;
VOC's and COCO's boxes are read once, by `attnzoo.data.voc` and `attnzoo.data.coco`, and come
with their datasets):
- `read_imagenet_loc_csv`: ImageNet `LOC_val_solution.csv` (`ImageId,PredictionString`, the
  string holding repeated `synset x0 y0 x1 y1`).
- `dataset_boxes`: the boxes an attnzoo dataset carries (`.boxes`, `.box_labels` when present).
- `attach_imagenet_boxes`: ImageNet validation boxes onto an image-folder split.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from ..errors import UserError


def _boxes_tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def read_imagenet_loc_csv(path) -> dict:
    """{image id: (boxes (K, 4), [synset, ...])} from a `LOC_val_solution.csv` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ImageNet box file {path} does not exist; expected LOC_val_solution.csv "
                        "from the ImageNet localisation challenge (ImageId,PredictionString)")
    out = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise UserError(f"{path}: expected the header 'ImageId,PredictionString', got {header}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            fields = row[1].split() if len(row) > 1 else []
            if len(row) != 2 or not fields or len(fields) % 5:
                raise UserError(f"{path}:{line_no}: expected 'ImageId,synset x0 y0 x1 y1 ...' "
                                f"(5 fields per box), got {','.join(row)[:80]!r}")
            try:
                rows = [[float(v) for v in fields[i + 1:i + 5]] for i in range(0, len(fields), 5)]
            except ValueError:
                raise UserError(f"{path}:{line_no}: box coordinates are not numbers") from None
            out[row[0]] = (_boxes_tensor(rows), fields[0::5])
    return out


def resize_crop_boxes(boxes: torch.Tensor, size_wh, resize: int | None, crop: int | None) -> torch.Tensor:
    """Boxes of an image of `size_wh` after torchvision's Resize(resize) (shorter side) and
    CenterCrop(crop); clipped to the crop. Either step may be None."""
    w, h = size_wh
    b = boxes.clone().float()
    if resize:
        scale = resize / min(w, h)
        b *= scale
        w, h = w * scale, h * scale
    if crop:
        left, top = (w - crop) / 2, (h - crop) / 2
        b -= torch.tensor([left, top, left, top])
        w = h = crop
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    return b


def dataset_boxes(dataset, indices=None, classes=None, img_hw=None) -> list:
    """Boxes of `dataset` samples as a list of (K, 4) tensors (UserError if it has none).

    With `classes` (one class per requested sample), only the boxes of that class are kept when
    the dataset says which class each box is (`.box_labels`, or `.boxes.labels`, per sample a
    (K,) tensor); otherwise all boxes of the sample are returned. Datasets whose boxes are in
    pixels of the original image and that resize every image to `img_hw` = (H, W) ignoring the
    aspect ratio (COCO, VOC) say so with `.image_sizes` (N, 2) (width, height): their boxes are
    scaled to `img_hw`.
    """
    boxes = getattr(dataset, "boxes", None)
    if boxes is None:
        name = getattr(dataset, "name", "") or type(dataset).__name__
        raise UserError(f"dataset {name} has no object boxes; bias statistics need a dataset with "
                        "boxes: synthetic, synthetic_multilabel, imagenet (with "
                        "LOC_val_solution.csv), voc or coco")
    labels = getattr(dataset, "box_labels", None)
    if labels is None:
        labels = getattr(boxes, "labels", None)
    sizes = getattr(dataset, "image_sizes", None)
    indices = range(len(boxes)) if indices is None else [int(i) for i in indices]
    out = []
    for j, i in enumerate(indices):
        b = torch.as_tensor(boxes[i], dtype=torch.float32).reshape(-1, 4)
        if classes is not None and labels is not None:
            lab = torch.as_tensor(labels[i]).reshape(-1)[: b.shape[0]]
            b = b[lab == int(classes[j])]
        if sizes is not None and img_hw is not None:
            w, h = (float(v) for v in sizes[i])
            b = b * torch.tensor([img_hw[1] / w, img_hw[0] / h] * 2)
        out.append(b)
    return out


def attach_imagenet_boxes(dataset, csv_path, img_size: int, crop_fraction: float | None = None) -> int:
    """Give an ImageNet validation image folder (`dataset.samples`: (path, class), class folders
    named by synset in `dataset.classes`) the boxes of `LOC_val_solution.csv`, mapped through the
    evaluation transform: Resize(img_size / crop_fraction) (shorter side) + CenterCrop(img_size);
    `crop_fraction` None means Resize(img_size). Sets `dataset.boxes` and `dataset.box_labels`
    (class index per box, -1 for a synset outside `dataset.classes`); returns the number of
    images that got boxes (UserError when none did).
    """
    from PIL import Image

    table = read_imagenet_loc_csv(csv_path)
    index = {c: k for k, c in enumerate(getattr(dataset, "classes", []))}
    resize = int(round(img_size / crop_fraction)) if crop_fraction else img_size
    boxes, labels, found = [], [], 0
    for path, _ in dataset.samples:
        entry = table.get(Path(path).stem)
        if entry is None:
            boxes.append(torch.zeros(0, 4))
            labels.append(torch.zeros(0, dtype=torch.long))
            continue
        with Image.open(path) as im:  # reads the header only
            size = im.size
        boxes.append(resize_crop_boxes(entry[0], size, resize, img_size))
        labels.append(torch.tensor([index.get(s, -1) for s in entry[1]], dtype=torch.long))
        found += 1
    if not found:
        raise UserError(f"{csv_path}: none of the {len(dataset.samples)} images of the split has a "
                        "row (ImageId = file name without extension)")
    dataset.boxes, dataset.box_labels = boxes, labels
    return found


def pad_boxes(boxes: list) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (K_i, 4) -> padded (N, K, 4) and validity (N, K) bool."""
    n = len(boxes)
    k = max((b.shape[0] for b in boxes), default=0)
    k = max(k, 1)
    out = torch.zeros(n, k, 4)
    valid = torch.zeros(n, k, dtype=torch.bool)
    for i, b in enumerate(boxes):
        out[i, :b.shape[0]] = b
        valid[i, :b.shape[0]] = True
    return out, valid


def box_masks(boxes: list, height: int, width: int) -> torch.Tensor:
    """(N, H, W) bool: pixels whose centre lies in any of the sample's boxes (union)."""
    padded, valid = pad_boxes(boxes)  # (N, K, 4), (N, K)
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (padded[..., i][..., None] for i in range(4))  # (N, K, 1)
    in_x = (xs >= x0) & (xs < x1)  # (N, K, W)
    in_y = (ys >= y0) & (ys < y1)  # (N, K, H)
    inside = in_y[..., :, None] & in_x[..., None, :] & valid[..., None, None]  # (N, K, H, W)
    return inside.any(dim=1)
