"""Box readers (ImageNet LOC csv, VOC XML, COCO json), geometry and pixel masks."""
import json

import pytest
import torch

from attnzoo.analysis.boxes import (box_masks, dataset_boxes, read_coco_instances,
                                    read_imagenet_loc_csv, read_voc_xml, resize_crop_boxes)
from attnzoo.errors import UserError


def test_imagenet_loc_csv(tmp_path):
    p = tmp_path / "LOC_val_solution.csv"
    p.write_text("ImageId,PredictionString\n"
                 "ILSVRC2012_val_00000001,n01751748 111 108 441 467 \n"
                 "ILSVRC2012_val_00000002,n09193705 0 1 10 11 n09193705 5 6 20 30\n")
    out = read_imagenet_loc_csv(p)
    boxes, synsets = out["ILSVRC2012_val_00000002"]
    assert synsets == ["n09193705", "n09193705"]
    assert torch.equal(boxes, torch.tensor([[0.0, 1, 10, 11], [5, 6, 20, 30]]))
    assert out["ILSVRC2012_val_00000001"][0].shape == (1, 4)


@pytest.mark.parametrize("text, match", [("Id,Boxes\n", "header"),
                                         ("ImageId,PredictionString\nx,n1 1 2 3\n", "5 fields"),
                                         ("ImageId,PredictionString\nx,n1 a b c d\n", "not numbers")])
def test_imagenet_loc_csv_malformed(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(UserError, match=match):
        read_imagenet_loc_csv(p)
    with pytest.raises(UserError, match="does not exist"):
        read_imagenet_loc_csv(tmp_path / "missing.csv")


def test_voc_xml(tmp_path):
    p = tmp_path / "000001.xml"
    p.write_text("<annotation><size><width>353</width><height>500</height><depth>3</depth></size>"
                 "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>48</xmin><ymin>240</ymin>"
                 "<xmax>195</xmax><ymax>371</ymax></bndbox></object>"
                 "<object><name>person</name><difficult>1</difficult><bndbox><xmin>8</xmin><ymin>12</ymin>"
                 "<xmax>352</xmax><ymax>498</ymax></bndbox></object></annotation>")
    out = read_voc_xml(p)
    assert out["size"] == (353, 500) and out["names"] == ["dog", "person"]
    assert out["difficult"] == [False, True]
    assert torch.equal(out["boxes"][0], torch.tensor([47.0, 239, 195, 371]))
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(UserError, match="not valid XML"):
        read_voc_xml(tmp_path / "bad.xml")
    (tmp_path / "nobox.xml").write_text("<annotation><size><width>1</width><height>1</height></size>"
                                        "<object><name>dog</name></object></annotation>")
    with pytest.raises(UserError, match="bndbox"):
        read_voc_xml(tmp_path / "nobox.xml")


def test_coco_instances(tmp_path):
    p = tmp_path / "instances_val2014.json"
    p.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": 640, "height": 480},
                   {"id": 9, "file_name": "b.jpg", "width": 10, "height": 10}],
        "annotations": [{"image_id": 7, "bbox": [10, 20, 30, 40], "category_id": 1},
                        {"image_id": 7, "bbox": [0, 0, 5, 5], "category_id": 18}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}))
    out = read_coco_instances(p)
    assert torch.equal(out[7]["boxes"], torch.tensor([[10.0, 20, 40, 60], [0, 0, 5, 5]]))
    assert out[7]["category_ids"] == [1, 18] and out[9]["boxes"].shape == (0, 4)
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(UserError, match="not a COCO instances file"):
        read_coco_instances(p)


def test_resize_and_center_crop():
    b = torch.tensor([[0.0, 0.0, 100.0, 50.0]])
    out = resize_crop_boxes(b, (200, 100), resize=50, crop=50)  # scale 0.5 -> 100x50, crop 25 px left
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 25.0, 25.0]]))


def test_masks_use_pixel_centres_and_union():
    m = box_masks([torch.tensor([[1.0, 0.0, 3.0, 2.0], [3.4, 3.4, 3.6, 3.6]]), torch.zeros(0, 4)], 4, 4)
    assert m[0].sum() == 4 + 1  # 2x2 block plus the pixel whose centre (3.5, 3.5) is covered
    assert m[0, 0, 1] and m[0, 1, 2] and not m[0, 0, 3] and m[0, 3, 3]
    assert not m[1].any()


def test_dataset_boxes_by_class_and_missing_boxes():
    class DS:
        name = "toy"
        boxes = [torch.tensor([[0.0, 0, 2, 2], [2, 2, 4, 4]])]
        box_labels = [torch.tensor([3, 5])]

    assert torch.equal(dataset_boxes(DS(), [0], classes=[5])[0], torch.tensor([[2.0, 2, 4, 4]]))
    assert dataset_boxes(DS(), [0])[0].shape == (2, 4)

    class NoBoxes:
        name = "cifar10/test"

    with pytest.raises(UserError, match="has no object boxes"):
        dataset_boxes(NoBoxes(), [0])


def test_coco_style_boxes_are_scaled_to_the_resized_image():
    class DS:
        boxes = [torch.tensor([[10.0, 20, 30, 40]])]
        image_sizes = torch.tensor([[100, 200]])  # (width, height)

    out = dataset_boxes(DS(), [0], img_hw=(50, 50))[0]
    assert torch.allclose(out, torch.tensor([[5.0, 5, 15, 10]]))


def test_attach_imagenet_boxes_to_an_image_folder(tmp_path):
    from PIL import Image

    from attnzoo.analysis.boxes import attach_imagenet_boxes

    paths = []
    for stem, size in (("ILSVRC2012_val_00000001", (200, 100)), ("ILSVRC2012_val_00000002", (50, 50))):
        p = tmp_path / f"{stem}.JPEG"
        Image.new("RGB", size).save(p, format="JPEG")
        paths.append(p)

    class Folder:
        classes = ["n01", "n02"]
        samples = [(str(paths[0]), 0), (str(paths[1]), 1)]

    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01 0 0 100 50 n99 150 0 200 100\n")
    ds = Folder()
    assert attach_imagenet_boxes(ds, csv, img_size=50) == 1
    # 200x100 -> resize shorter side to 50 -> 100x50 -> center crop 50: 25 px cut on the left
    assert torch.allclose(ds.boxes[0], torch.tensor([[0.0, 0, 25, 25], [50, 0, 50, 50]]))
    assert ds.box_labels[0].tolist() == [0, -1] and ds.boxes[1].shape == (0, 4)
    csv.write_text("ImageId,PredictionString\nother,n01 0 0 1 1\n")
    with pytest.raises(UserError, match="none of the 2 images"):
        attach_imagenet_boxes(Folder(), csv, img_size=50)
