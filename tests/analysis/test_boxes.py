"""ImageNet LOC csv boxes, box geometry and pixel masks (VOC and COCO: tests/data/test_coco_voc.py)."""

import pytest
import torch

from attnzoo.analysis.boxes import box_masks, dataset_boxes, read_imagenet_loc_csv, resize_crop_boxes
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
