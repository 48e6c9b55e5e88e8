"""The embedded datasets `synthetic` and `synthetic_multilabel`: procedurally generated, in memory,
deterministic from a seed, built to make attention and context bias measurable.

`synthetic` (single label): every image holds one foreground object over a textured background.
- The class is the object's shape: 0 disc, 1 square, 2 triangle, 3 cross, 4 ring, 5 bars,
  6 diamond, 7 frame, 8 x-shape, 9 half-disc. Each object has a random position, scale (radius
  0.22-0.38 of the image side), rotation (+-25 degrees), colour (contrasting with the background)
  and a random stripe texture on its surface. With `num_classes` > 10, class c is shape c % 10
  with fill pattern c // 10 (pattern 0 is the plain texture), so any class count can be made.
- The background is one of 10 context textures: horizontal, vertical, diagonal and anti-diagonal
  stripes, checkerboard, polka dots, concentric rings, grid lines, wavy stripes and smooth blotches,
  with random frequency, phase and colours. Class c's own context is c % 10.
- Train split: the background is the class's own context with probability `context_bias`, else one
  of the 9 others uniformly. Eval splits: `test` (always the own context) and `test_swapped`
  (always another class's context). A model that learned the context instead of the object scores
  far lower on `test_swapped`.
- Boxes: the exact pixel box of the drawn object, (x0, y0, x1, y1), x1/y1 exclusive.

`synthetic_multilabel`: 1-4 objects per image (distinct classes, one per cell of a jittered 2x2
grid, radius 0.11-0.2 of the side), multi-hot float targets, one box per object. Co-occurrence:
classes come in partner pairs (0-1, 2-3, ...); after the first object, each further object is the
partner of an already placed class with probability `cooccurrence` (default 0.6) when that partner
is not yet present, else a uniformly drawn absent class. The background is the context of one of the
present classes with probability `context_bias` (train), always (test), never (test_swapped).

Options (`data.options`): num_train (default 10000), num_test (2000, per eval split), seed (0),
context_bias (0.8), num_classes (10; 20 for the multi-label set), and for the multi-label set
max_objects (4, at most num_classes) and cooccurrence (0.6). `data.img_size` (default 32) is the
generated size: any size >= 16 works, the drawing is resolution independent. The defaults are
sized for a default `attnzoo train` of a few minutes on 2 CPU cores (measured accuracy and
generation time: benchmarks/results/synthetic_dataset.md).

Every random number is drawn from a `torch.Generator` seeded from (seed, split), so the same
options give bit-identical data on every machine and each split does not depend on the others'
sizes. Images are drawn in chunks with batched tensor operations, never per image or per pixel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError
from .memory import InMemoryDataset, Ragged

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bars", "diamond", "frame", "x_shape", "half_disc")
CONTEXTS = ("h_stripes", "v_stripes", "diag_stripes", "antidiag_stripes", "checkerboard", "dots",
            "rings", "grid", "waves", "blotches")
NUM_CONTEXTS = len(CONTEXTS)
SPLITS = {"train": 0, "test": 1, "test_swapped": 2}
MEAN = (0.5, 0.5, 0.5)  # close to the measured per-channel statistics of the default train split
STD = (0.25, 0.25, 0.25)
_CHUNK = 2048

SINGLE_DEFAULTS = {"num_train": 10000, "num_test": 2000, "seed": 0, "context_bias": 0.8, "num_classes": 10}
MULTI_DEFAULTS = {**SINGLE_DEFAULTS, "num_classes": 20, "max_objects": 4, "cooccurrence": 0.6}


# ------------------------------------------------------------------------------------------ options

def parse_options(options: dict, multilabel: bool) -> dict:
    """Defaults merged with `options`; unknown keys and bad values raise UserError."""
    defaults = MULTI_DEFAULTS if multilabel else SINGLE_DEFAULTS
    name = "synthetic_multilabel" if multilabel else "synthetic"
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UserError(f"data.options for {name}: unknown key(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(f'{k} (default {v})' for k, v in defaults.items())}")
    out = dict(defaults)
    for key, value in options.items():
        want = type(defaults[key])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise UserError(f"data.options.{key}: expected {'a number' if want is float else 'an integer'}, "
                            f"got {value!r}")
        out[key] = value
    for key in ("num_train", "num_test"):
        if out[key] < 0:
            raise UserError(f"data.options.{key} must be >= 0, got {out[key]}")
    if out["num_classes"] < 2:
        raise UserError(f"data.options.num_classes must be at least 2, got {out['num_classes']}")
    for key in ("context_bias", "cooccurrence"):
        if key in out and not 0.0 <= out[key] <= 1.0:
            raise UserError(f"data.options.{key} must be in [0, 1], got {out[key]}")
    if multilabel and not 1 <= out["max_objects"] <= 4:
        raise UserError(f"data.options.max_objects must be 1-4 (one object per cell of a 2x2 grid), "
                        f"got {out['max_objects']}")
    if multilabel and "max_objects" not in options:
        out["max_objects"] = min(out["max_objects"], out["num_classes"])
    if multilabel and out["num_classes"] < out["max_objects"]:
        raise UserError(f"data.options.num_classes ({out['num_classes']}) must be at least max_objects "
                        f"({out['max_objects']}): the objects of one image have distinct classes")
    return out


def class_names(num_classes: int) -> list[str]:
    return [SHAPES[c % 10] if c < 10 else f"{SHAPES[c % 10]}_p{c // 10}" for c in range(num_classes)]


def _generator(seed: int, split: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * SPLITS[split] + 17)


def _uniform(g, n, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


# ------------------------------------------------------------------------------------- backgrounds

def _background_params(g, n: int) -> dict:
    c1 = _uniform(g, n, 0.15, 0.85, 3)
    c2 = (c1 + _uniform(g, n, -0.35, 0.35, 3)).clamp(0.05, 0.95)
    return {"c1": c1, "c2": c2, "freq": _uniform(g, n, 2.5, 4.5), "phase": _uniform(g, n, 0, 2 * math.pi),
            "tilt": _uniform(g, n, -0.17, 0.17), "centre": _uniform(g, n, 0.2, 0.8, 2),
            "blotch": torch.rand(n, 1, 4, 4, generator=g)}


def _draw_backgrounds(ctx: torch.Tensor, p: dict, S: int) -> torch.Tensor:
    """Backgrounds (n, 3, S, S) in [0, 1]: the texture of context `ctx` (n,) with parameters `p`."""
    n = ctx.shape[0]
    grid = (torch.arange(S, dtype=torch.float32) + 0.5) / S  # unit coordinates of pixel centres
    yy, xx = grid[:, None].expand(S, S), grid[None, :].expand(S, S)
    t = torch.empty(n, S, S)
    for k in range(NUM_CONTEXTS):
        idx = (ctx == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        f = p["freq"][idx, None, None]
        ph = p["phase"][idx, None, None]
        a = p["tilt"][idx, None, None]
        x, y = xx[None], yy[None]
        if k in (0, 1, 2, 3):  # stripes, tilted by a few degrees
            base = (y, x, (x + y) / math.sqrt(2), (x - y) / math.sqrt(2))[k]
            other = (x, y, (x - y) / math.sqrt(2), (x + y) / math.sqrt(2))[k]
            u = base * torch.cos(a) + other * torch.sin(a)
            tk = 0.5 + 0.5 * torch.sin(2 * math.pi * f * u + ph)
        elif k == 4:  # checkerboard
            tk = (torch.sin(math.pi * f * x + ph) * torch.sin(math.pi * f * y + ph) > 0).float()
        elif k == 5:  # polka dots
            fx, fy = torch.frac(x * f + ph / 6.3), torch.frac(y * f + ph / 6.3)
            tk = torch.exp(-((fx - 0.5) ** 2 + (fy - 0.5) ** 2) / (2 * 0.16 ** 2))
        elif k == 6:  # concentric rings around a random centre
            cx, cy = p["centre"][idx, 0, None, None], p["centre"][idx, 1, None, None]
            r = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            tk = 0.5 + 0.5 * torch.sin(2 * math.pi * f * 1.3 * r + ph)
        elif k == 7:  # grid lines
            lines = (torch.cos(math.pi * f * x + ph).abs() > 0.85) | (torch.cos(math.pi * f * y + ph).abs() > 0.85)
            tk = lines.float()
        elif k == 8:  # wavy stripes
            tk = 0.5 + 0.5 * torch.sin(2 * math.pi * f * x + 2.2 * torch.sin(2 * math.pi * 1.5 * y + ph))
        else:  # smooth random blotches
            low = F.interpolate(p["blotch"][idx], size=(S, S), mode="bicubic", align_corners=False)[:, 0]
            tk = ((low - 0.5) * 2.2 + 0.5).clamp(0, 1)
        t[idx] = tk.expand(idx.numel(), S, S)
    c1, c2 = p["c1"][:, :, None, None], p["c2"][:, :, None, None]
    return c1 + (c2 - c1) * t[:, None]


# ------------------------------------------------------------------------------------------ objects

def _object_params(g, n: int, slots: int, r_lo: float, r_hi: float) -> dict:
    return {"r": _uniform(g, n, r_lo, r_hi, slots), "pos": torch.rand(n, slots, 2, generator=g),
            "theta": _uniform(g, n, -25 * math.pi / 180, 25 * math.pi / 180, slots),
            "colour": torch.rand(n, slots, 3, generator=g), "tex_freq": _uniform(g, n, 3.0, 6.0, slots),
            "tex_angle": _uniform(g, n, 0, math.pi, slots), "tex_phase": _uniform(g, n, 0, 2 * math.pi, slots)}


def _shape_mask(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of shape `shape` in object coordinates (u right, v down, unit = radius)."""
    au, av = u.abs(), v.abs()
    box = torch.maximum(au, av)
    if shape == 0:
        return u * u + v * v <= 1.0
    if shape == 1:
        return box <= 0.75
    if shape == 2:
        return (v <= 0.7) & (au <= 0.55 * (v + 0.9))
    if shape == 3:
        return ((au <= 0.28) & (av <= 0.9)) | ((av <= 0.28) & (au <= 0.9))
    if shape == 4:
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.55 ** 2)
    if shape == 5:
        band = torch.floor((v + 0.8) / 0.32)
        return (box <= 0.8) & (torch.remainder(band, 2) == 0)
    if shape == 6:
        return au + av <= 0.95
    if shape == 7:
        return (box <= 0.85) & (box >= 0.5)
    if shape == 8:
        return ((au - av).abs() <= 0.3) & (box <= 0.85)
    return (u * u + v * v <= 1.0) & (v >= -0.15)


def _draw_objects(img: torch.Tensor, cls: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, p: dict,
                  bg_mean: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Paint one object per image of `img` (n, 3, S, S) in place; return exact boxes (n, 4).

    `cls` (n,), centre `cx`, `cy` (n,) in pixels, `p` the per-image object parameters of this slot
    (r in pixels, theta, colour, texture), `active` (n,) which images get an object. Inactive or
    (never, by construction) empty masks give a zero box.
    """
    n, _, S, _ = img.shape
    coords = torch.arange(S, dtype=torch.float32) + 0.5
    dx = coords[None, None, :] - cx[:, None, None]  # (n, 1, S)
    dy = coords[None, :, None] - cy[:, None, None]  # (n, S, 1)
    cos, sin = torch.cos(p["theta"])[:, None, None], torch.sin(p["theta"])[:, None, None]
    r = p["r"][:, None, None]
    u = (dx * cos + dy * sin) / r  # (n, S, S)
    v = (-dx * sin + dy * cos) / r
    mask = torch.zeros(n, S, S, dtype=torch.bool)
    shape = cls % 10
    for s in range(10):
        idx = (shape == s).nonzero().squeeze(1)
        if idx.numel():
            mask[idx] = _shape_mask(s, u[idx], v[idx])
    # fill pattern for classes beyond 10: pattern k>0 cuts stripes of its own period into the object
    pattern = cls // 10
    if bool((pattern > 0).any()):
        angle = (pattern.float() * 2.39996)[:, None, None]  # golden angle: distinct orientations
        period = (0.5 + 0.15 * (pattern % 3).float())[:, None, None]
        stripes = torch.remainder(u * torch.cos(angle) + v * torch.sin(angle), period) < 0.6 * period
        mask &= stripes | (pattern == 0)[:, None, None]
    mask &= active[:, None, None]
    # colour: random, pushed away from the background mean for contrast
    colour = p["colour"]
    close = (colour - bg_mean).norm(dim=1) < 0.45
    colour = torch.where(close[:, None], torch.where(bg_mean < 0.5, bg_mean + 0.5, bg_mean - 0.5), colour)
    a = p["tex_angle"][:, None, None]
    tex = 0.5 + 0.5 * torch.sin(p["tex_freq"][:, None, None] * (u * torch.cos(a) + v * torch.sin(a))
                                + p["tex_phase"][:, None, None])
    surface = colour[:, :, None, None] * (1.0 - 0.25 * tex[:, None])  # (n, 3, S, S)
    m = mask[:, None].float()
    img.mul_(1.0 - m).add_(surface * m)
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (n, S)
    ar = torch.arange(S)
    big = S + 1
    y0 = torch.where(rows, ar, big).amin(dim=1)
    y1 = torch.where(rows, ar + 1, -1).amax(dim=1)
    x0 = torch.where(cols, ar, big).amin(dim=1)
    x1 = torch.where(cols, ar + 1, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def _finish(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    img.add_(0.04 * torch.randn(img.shape, generator=g))
    return img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)


# ------------------------------------------------------------------------------------ single label

def _keeps_own_context(g, n, split, context_bias):
    """(n,) bool: which images show their own context -- with probability `context_bias` in train,
    always in test, never in test_swapped."""
    if split == "train":
        return torch.rand(n, generator=g) < context_bias
    return torch.full((n,), split == "test")


def generate_single(n: int, img_size: int, split: str, seed: int = 0, context_bias: float = 0.8,
                    num_classes: int = 10) -> InMemoryDataset:
    """`n` images (n, 3, img_size, img_size) uint8 of the single-label set for `split`."""
    if img_size < 16:
        raise UserError(f"data.img_size for synthetic data must be at least 16, got {img_size}")
    g = _generator(seed, split)
    S = img_size
    labels = torch.randint(num_classes, (n,), generator=g)
    own = labels % NUM_CONTEXTS
    other = (own + torch.randint(1, NUM_CONTEXTS, (n,), generator=g)) % NUM_CONTEXTS
    keep = _keeps_own_context(g, n, split, context_bias)
    ctx = torch.where(keep, own, other)
    bg = _background_params(g, n)
    obj = _object_params(g, n, 1, 0.22, 0.38)
    obj = {k: v[:, 0] for k, v in obj.items()}
    r = obj["r"] * S
    cx = r + obj["pos"][:, 0] * (S - 2 * r)
    cy = r + obj["pos"][:, 1] * (S - 2 * r)
    obj["r"] = r
    images = torch.empty(n, 3, S, S, dtype=torch.uint8)
    boxes = torch.zeros(n, 4)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        pb = {k: v[sl] for k, v in bg.items()}
        img = _draw_backgrounds(ctx[sl], pb, S)
        bg_mean = (pb["c1"] + pb["c2"]) / 2
        po = {k: v[sl] for k, v in obj.items()}
        active = torch.ones(img.shape[0], dtype=torch.bool)
        boxes[sl] = _draw_objects(img, labels[sl], cx[sl], cy[sl], po, bg_mean, active)
        images[sl] = _finish(img, g)
    ones = torch.ones(n, dtype=torch.long)
    return InMemoryDataset(images, labels, Ragged(boxes, ones), ctx, name=f"synthetic/{split}",
                           box_labels=Ragged(labels, ones))


# -------------------------------------------------------------------------------------- multi label

def _multilabel_classes(g, n: int, num_classes: int, max_objects: int, cooccurrence: float):
    """Classes (n, max_objects) and the active slots (n, max_objects), distinct classes per image."""
    counts = torch.randint(1, max_objects + 1, (n,), generator=g)
    cls = torch.zeros(n, max_objects, dtype=torch.long)
    present = torch.zeros(n, num_classes, dtype=torch.bool)
    rows = torch.arange(n)
    for k in range(max_objects):
        # uniform choice among absent classes: argmax of random scores with present ones excluded
        scores = torch.rand(n, num_classes, generator=g).masked_fill(present, -1.0)
        pick = scores.argmax(dim=1)
        if k > 0:
            src = cls[rows, torch.randint(k, (n,), generator=g)]  # one already placed class
            partner = src ^ 1  # pairs (0,1), (2,3), ...
            ok = (partner < num_classes) & ~present[rows, partner.clamp(max=num_classes - 1)]
            use = ok & (torch.rand(n, generator=g) < cooccurrence)
            pick = torch.where(use, partner, pick)
        active = k < counts
        cls[:, k] = torch.where(active, pick, cls[:, 0] if k else pick)
        present[rows, pick] |= active
    active = torch.arange(max_objects)[None, :] < counts[:, None]
    return cls, active, present


def generate_multilabel(n: int, img_size: int, split: str, seed: int = 0, context_bias: float = 0.8,
                        num_classes: int = 20, max_objects: int = 4, cooccurrence: float = 0.6) -> InMemoryDataset:
    """`n` images of the multi-label set: targets (n, num_classes) float multi-hot, all boxes."""
    if img_size < 16:
        raise UserError(f"data.img_size for synthetic data must be at least 16, got {img_size}")
    g = _generator(seed + 104729, split)
    S = img_size
    cls, active, present = _multilabel_classes(g, n, num_classes, max_objects, cooccurrence)
    counts = active.sum(dim=1)
    # background context: that of one present class (train: with prob. context_bias)
    chosen = cls[torch.arange(n), (torch.rand(n, generator=g) * counts).long().clamp(max=max_objects - 1)]
    own = chosen % NUM_CONTEXTS
    ctx_present = torch.zeros(n, NUM_CONTEXTS, dtype=torch.bool)
    for k in range(max_objects):
        ctx_present[torch.arange(n), cls[:, k] % NUM_CONTEXTS] |= active[:, k]
    scores = torch.rand(n, NUM_CONTEXTS, generator=g).masked_fill(ctx_present, -1.0)
    absent = scores.argmax(dim=1)  # a context of no present class (exists: at most 4 of 10 taken)
    keep = _keeps_own_context(g, n, split, context_bias)
    ctx = torch.where(keep, own, absent)
    bg = _background_params(g, n)
    obj = _object_params(g, n, max_objects, 0.11, 0.2)
    cells = torch.argsort(torch.rand(n, 4, generator=g), dim=1)[:, :max_objects]  # distinct cells
    r = obj["r"] * S
    half = S / 2
    cx = (cells % 2).float() * half + r + obj["pos"][..., 0] * (half - 2 * r)
    cy = (cells // 2).float() * half + r + obj["pos"][..., 1] * (half - 2 * r)
    obj["r"] = r
    images = torch.empty(n, 3, S, S, dtype=torch.uint8)
    boxes = torch.zeros(n, max_objects, 4)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        pb = {k: v[sl] for k, v in bg.items()}
        img = _draw_backgrounds(ctx[sl], pb, S)
        bg_mean = (pb["c1"] + pb["c2"]) / 2
        for k in range(max_objects):
            on = active[sl, k].nonzero().squeeze(1)  # draw only the images that have a k-th object
            if on.numel() == 0:
                continue
            rows = on + start
            po = {key: v[rows, k] for key, v in obj.items()}
            sub = img[on]
            boxes[rows, k] = _draw_objects(sub, cls[rows, k], cx[rows, k], cy[rows, k], po, bg_mean[on],
                                           torch.ones(on.numel(), dtype=torch.bool))
            img[on] = sub
        images[sl] = _finish(img, g)
    targets = present.float()
    return InMemoryDataset(images, targets, Ragged.from_padded(boxes, counts), ctx,
                           name=f"synthetic_multilabel/{split}", box_labels=Ragged.from_padded(cls, counts))


# ------------------------------------------------------------------------------------------ bundle

def build(cfg, train: bool = True, multilabel: bool = False):
    """DataBundle of `synthetic` / `synthetic_multilabel` from a DataConfig."""
    from .bundle import DataBundle

    o = parse_options(dict(cfg.options or {}), multilabel)
    size = cfg.img_size or 32
    gen = generate_multilabel if multilabel else generate_single
    extra = {"max_objects": o["max_objects"], "cooccurrence": o["cooccurrence"]} if multilabel else {}
    common = dict(img_size=size, seed=o["seed"], context_bias=o["context_bias"], num_classes=o["num_classes"], **extra)
    train_set = gen(o["num_train"], split="train", **common) if train else None
    evals = {split: gen(o["num_test"], split=split, **common) for split in ("test", "test_swapped")}
    return DataBundle(train=train_set, evals=evals, num_classes=o["num_classes"], multilabel=multilabel,
                      img_size=size, mean=MEAN, std=STD, class_names=class_names(o["num_classes"]),
                      has_boxes=True)
