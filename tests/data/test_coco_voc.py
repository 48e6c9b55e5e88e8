"""COCO 2014 and VOC 2007 multi-label datasets from tiny trees in the real file formats."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnzoo.data import build_data, build_loader
from attnzoo.data.coco import build as build_coco
from attnzoo.data.coco import read_coco
from attnzoo.data.voc import VOC_CLASSES, read_voc_xml
from attnzoo.data.voc import build as build_voc
from attnzoo.engine.config import DataConfig
from attnzoo.errors import UserError

# The 80 category ids of COCO (1..90 with gaps) in shuffled order, as the files do not sort them.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def jpeg(path: Path, colour=(200, 30, 30), size=(16, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


def write_coco(root: Path, split: str, images: dict, annotations: list):
    """images: {id: file_name}; annotations: [(image_id, category_id, [x, y, w, h])]."""
    cats = [{"id": c, "name": f"cat{c}", "supercategory": "x"} for c in reversed(COCO_IDS)]
    data = {"info": {}, "licenses": [],
            "images": [{"id": i, "file_name": f, "width": 16, "height": 12} for i, f in images.items()],
            "annotations": [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0, "segmentation": []} for k, (i, c, b) in enumerate(annotations)],
            "categories": cats}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
    for f in images.values():
        jpeg(root / f"{split}2014" / f)


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, "train", {1: "COCO_train2014_000000000001.jpg", 2: "COCO_train2014_000000000002.jpg",
                               5: "COCO_train2014_000000000005.jpg"},
               [(1, 1, [1, 2, 3, 4]), (1, 90, [0, 0, 5, 5]), (1, 1, [2, 2, 2, 2]), (2, 13, [4, 4, 4, 4])])
    write_coco(root, "val", {7: "COCO_val2014_000000000007.jpg", 8: "COCO_val2014_000000000008.jpg"},
               [(7, 2, [0, 0, 8, 8]), (8, 90, [1, 1, 1, 1])])
    return root


def test_coco_targets_boxes_and_items(coco_root):
    bundle = build_coco(DataConfig(name="coco", root=str(coco_root), img_size=24), train=True)
    assert bundle.num_classes == 80 and bundle.multilabel and bundle.has_boxes and bundle.img_size == 24
    train, val = bundle.train, bundle.evals["val"]
    assert len(train) == 3 and len(val) == 2
    # ids are mapped in sorted id order: 1 -> 0, 2 -> 1, 13 -> 11 (12 does not exist), 90 -> 79
    assert train.targets[0].nonzero().flatten().tolist() == [0, 79]
    assert train.targets[1].nonzero().flatten().tolist() == [11]
    assert train.targets[2].sum() == 0  # an image without objects stays, all-zero
    assert val.targets[0].nonzero().flatten().tolist() == [1]
    assert bundle.class_names[0] == "cat1" and bundle.class_names[79] == "cat90"
    assert train.boxes[0].tolist() == [[1, 2, 4, 6], [0, 0, 5, 5], [2, 2, 4, 4]]
    assert train.box_labels[0].tolist() == [0, 79, 0] and len(train.boxes[2]) == 0
    assert train.image_sizes[0].tolist() == [16, 12]
    image, target = val[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8  # converted and normalised on the device
    assert target.shape == (80,)


def test_coco_through_the_loader_with_cutout(coco_root):
    cfg = DataConfig(name="coco", root=str(coco_root), img_size=20, batch_size=2, workers=0,
                     augment="crop_flip", cutout=8, options={"randaugment": "rand-m9-n2"})
    bundle = build_data(cfg, train=True)
    loader = build_loader(bundle.train, bundle, cfg, train=True, seed=0)
    images, targets = next(iter(loader))
    assert images.shape == (2, 3, 20, 20) and targets.shape == (2, 80)
    again, _ = next(iter(build_loader(bundle.train, bundle, cfg, train=True, seed=0)))
    assert torch.equal(images, again)  # per-sample seeded: RandAugment and flip replay exactly


def test_coco_errors(coco_root, tmp_path):
    cfg = DataConfig(name="coco", root=str(coco_root))
    with pytest.raises(UserError, match="--data-dir"):
        build_coco(DataConfig(name="coco"))
    with pytest.raises(UserError, match="'coco'.*year, randaugment"):
        build_coco(DataConfig(name="coco", root=str(coco_root), options={"yaer": 2014}))
    (coco_root / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(UserError, match="1 of the 3.*instances_train2014.json.*COCO_train2014_000000000002.jpg"):
        build_coco(cfg)
    assert build_coco(cfg, train=False).train is None  # the val split alone is complete
    ann = coco_root / "annotations" / "instances_val2014.json"
    ann.write_text('{"images": [')
    with pytest.raises(UserError, match="instances_val2014.json.*JSON"):
        build_coco(cfg, train=False)
    ann.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(UserError, match="not in COCO instances format"):
        build_coco(cfg, train=False)
    ann.unlink()
    with pytest.raises(UserError, match="instances_val2014.json not found"):
        build_coco(cfg, train=False)
    with pytest.raises(UserError, match="coco not found under"):
        build_coco(DataConfig(name="coco", root=str(tmp_path / "empty")))


def voc_xml(objects, size=(16, 12)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{int(d)}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    ann = {"000005": [("chair", False, (2, 3, 10, 12)), ("person", True, (1, 1, 4, 4))],
           "000007": [("car", False, (1, 1, 16, 12))],
           "000001": [("dog", False, (5, 5, 9, 9)), ("dog", True, (1, 1, 2, 2))],
           "000004": [("tvmonitor", True, (1, 1, 3, 3))]}
    (root / "Annotations").mkdir(parents=True)
    for i, objs in ann.items():
        (root / "Annotations" / f"{i}.xml").write_text(voc_xml(objs))
        jpeg(root / "JPEGImages" / f"{i}.jpg")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000007\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000004\n")
    return tmp_path  # the devkit layout is found below the given folder


def test_voc_targets_difficult_and_boxes(voc_root):
    bundle = build_voc(DataConfig(name="voc", root=str(voc_root), img_size=16))
    assert bundle.num_classes == 20 and bundle.class_names == list(VOC_CLASSES)
    train, test = bundle.train, bundle.evals["test"]
    c = VOC_CLASSES.index
    assert train.targets[0].nonzero().flatten().tolist() == [c("chair")]  # difficult person ignored
    assert test.targets[0].nonzero().flatten().tolist() == [c("dog")]  # one easy dog suffices
    assert test.targets[1].sum() == 0  # difficult-only tvmonitor: negative
    assert train.boxes[0].tolist() == [[1, 2, 10, 12], [0, 0, 4, 4]]
    assert train.box_difficult[0].tolist() == [False, True]
    assert train.box_labels[0].tolist() == [c("chair"), c("person")]
    assert test[1][0].shape == (3, 16, 16)
    positive = build_voc(DataConfig(name="voc", root=str(voc_root), options={"difficult": "positive"}),
                         train=False)
    assert positive.train is None
    assert positive.evals["test"].targets[1].nonzero().flatten().tolist() == [c("tvmonitor")]


def test_voc_errors(voc_root):
    cfg = DataConfig(name="voc", root=str(voc_root))
    with pytest.raises(UserError, match="data.options.difficult.*'ignore'.*negative, positive"):
        build_voc(DataConfig(name="voc", root=str(voc_root), options={"difficult": "ignore"}))
    devkit = voc_root / "VOCdevkit" / "VOC2007"
    (devkit / "Annotations" / "000004.xml").write_text("<annotation><object>")
    with pytest.raises(UserError, match="000004.xml.*XML"):
        build_voc(cfg)
    (devkit / "Annotations" / "000004.xml").write_text(voc_xml([("tv", False, (1, 1, 2, 2))]))
    with pytest.raises(UserError, match="'tv'.*aeroplane"):
        build_voc(cfg)
    (devkit / "Annotations" / "000004.xml").write_text(voc_xml([]))
    (devkit / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(UserError, match="1 of the 2.*test.txt"):
        build_voc(cfg)
    (devkit / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(UserError, match="test.txt.*VOCtest"):
        build_voc(cfg)


def test_degenerate_annotation_files_end_in_one_line(coco_root, voc_root):
    ann = coco_root / "annotations" / "instances_val2014.json"
    ann.write_text("[" * 200_000 + "]" * 200_000)  # too deep for Python's JSON reader
    with pytest.raises(UserError, match=r"instances_val2014.json.*deeper"):
        read_coco(ann)
    for field, value in (("width", "1e999"), ("height", "-1")):
        text = json.dumps({"images": [{"id": 3, "file_name": "a.jpg", "width": 16, "height": 12}],
                           "annotations": [], "categories": [{"id": 1, "name": "a"}]})
        ann.write_text(text.replace(f'"{field}": {16 if field == "width" else 12}', f'"{field}": {value}'))
        with pytest.raises(UserError, match=rf"instances_val2014.json.*image 3.*{field} {value.replace('1e999', 'inf')}.*finite"):
            read_coco(ann)
    ann.write_text(json.dumps({"images": [{"id": 3, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "a"}],
                               "annotations": [{"id": 5, "image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 2]}]})
                   .replace("2]", "1e999]"))
    with pytest.raises(UserError, match=r"annotation 5.*\[0, 0, 1, inf\].*finite"):
        read_coco(ann)
    xml = voc_root / "VOCdevkit" / "VOC2007" / "Annotations" / "000004.xml"
    xml.write_text(voc_xml([], size=("1e999", 12)))
    with pytest.raises(UserError, match=r"000004.xml.*width 1e999.*finite"):
        read_voc_xml(xml)
    xml.write_text(voc_xml([("dog", False, (1, 1, "1e999", 2))]))
    with pytest.raises(UserError, match=r"000004.xml.*dog bndbox.*finite"):
        read_voc_xml(xml)


def test_voc_xml_reader(voc_root):
    xml = voc_root / "VOCdevkit" / "VOC2007" / "Annotations" / "000005.xml"
    out = read_voc_xml(xml)
    c = VOC_CLASSES.index
    assert out == {"size": (16, 12), "objects": [(c("chair"), False, (1.0, 2.0, 10.0, 12.0)),
                                                 (c("person"), True, (0.0, 0.0, 4.0, 4.0))]}
