"""Multi-label readers (VOC2007, COCO 2014, image lists, Fashion-MNIST scenes) and the image
decoder they share, on tiny fixtures written in the official file formats."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_fashion_mnist, write_idx
from PIL import Image

from attnvision.data import list_datasets, load_dataset
from attnvision.data import scenes as scenes_module
from attnvision.data.images import load_images
from attnvision.data.voc import CLASSES as VOC_CLASSES


def solid(path: Path, red: int, size: tuple[int, int] = (20, 14), mode: str = "RGB") -> Path:
    """A flat image whose red channel (or grey level) identifies it after decoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (red, 60, 200), "L": red, "RGBA": (red, 60, 200, 128)}[mode]
    Image.new(mode, size, color).save(path)
    return path


def ids_of(images: torch.Tensor) -> list[int]:
    """Recover each image's id from its red level (id i was written as 20 i + 10)."""
    return [round((v - 10) / 20) for v in images[:, 0].float().mean((1, 2)).tolist()]


# ---------------------------------------------------------------------------------------------
# images.load_images


def test_load_images_converts_modes_and_squishes(tmp_path) -> None:
    files = [solid(tmp_path / "a.jpg", 30), solid(tmp_path / "b.png", 90, (7, 31), "L"),
             solid(tmp_path / "c.png", 150, (40, 9), "RGBA")]
    out = load_images(files, (6, 10))
    assert out.shape == (3, 3, 6, 10) and out.dtype == torch.uint8
    assert (out[:, 0].float().mean((1, 2)) - torch.tensor([30.0, 90, 150])).abs().max() <= 2
    assert torch.equal(out[1, 0], out[1, 2])  # grey → RGB copies the level
    assert load_images(files[:1], 5, mode="L").shape == (1, 1, 5, 5)


def test_load_images_native_size_and_mismatch(tmp_path) -> None:
    same = [solid(tmp_path / f"{i}.png", 10 * i) for i in range(3)]
    assert load_images(same, None).shape == (3, 3, 14, 20)
    odd = solid(tmp_path / "odd.png", 0, (5, 5))
    with pytest.raises(ValueError, match=r"odd\.png: size 5x5, expected 14x20"):
        load_images(same + [odd], None)


def test_load_images_names_missing_and_corrupt_files(tmp_path) -> None:
    good = solid(tmp_path / "good.jpg", 50)
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        load_images([good, tmp_path / "gone.jpg"], 8)
    (tmp_path / "text.jpg").write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"2 of 3 image files cannot be used:(.|\n)*cut\.jpg(.|\n)*text\.jpg"):
        load_images([good, tmp_path / "text.jpg", truncated], 8)
    with pytest.raises(ValueError, match="mode"):
        load_images([good], 8, mode="CMYK")


# ---------------------------------------------------------------------------------------------
# VOC2007


def voc_xml(objects: list[tuple[str, int]]) -> str:
    body = "".join(f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
                   f"<difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                   f"<ymax>9</ymax></bndbox></object>" for n, d in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename><size><width>20</width>"
            f"<height>14</height><depth>3</depth></size><segmented>0</segmented>{body}</annotation>")


# image id → objects (name, difficult). 0-4 trainval, 5-7 test.
VOC_OBJECTS = {
    0: [("dog", 0), ("person", 1)],                  # person difficult-only
    1: [("cat", 1), ("cat", 0)],                     # cat has a non-difficult instance: positive
    2: [("person", 0), ("person", 0), ("bus", 0)],
    3: [("diningtable", 1)],
    4: [("tvmonitor", 0)],
    5: [("bird", 0), ("bird", 1), ("sofa", 1)],
    6: [("train", 0)],
    7: [("cow", 1), ("horse", 0)],
}


def write_voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for i, objects in VOC_OBJECTS.items():
        (voc / "Annotations" / f"{i:06d}.xml").write_text(voc_xml(objects))
        solid(voc / "JPEGImages" / f"{i:06d}.jpg", 20 * i + 10)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i:06d}\n" for i in range(5)))
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i:06d}\n" for i in range(5, 8)))
    return voc


def voc_target(i: int, difficult: float) -> torch.Tensor:
    """Expected targets of VOC image i with difficult-only classes set to ``difficult``."""
    t = torch.zeros(20)
    for name, d in sorted(VOC_OBJECTS[i], key=lambda o: -o[1]):  # non-difficult instances last: they win
        t[VOC_CLASSES.index(name)] = difficult if d else 1.0
    return t


@pytest.fixture()
def voc_root(tmp_path) -> Path:
    write_voc(tmp_path)
    return tmp_path


def test_voc_default_policies(voc_root) -> None:
    bundle = load_dataset("voc2007", data_dir=voc_root, val_size=2, seed=1, img_size=12)
    assert bundle.task == "multilabel" and bundle.class_names == VOC_CLASSES and bundle.num_classes == 20
    assert bundle.train.images.shape == (3, 3, 12, 12) and bundle.val.images.shape == (2, 3, 12, 12)
    assert bundle.train.targets.dtype == torch.float32
    train_ids, val_ids = ids_of(bundle.train.images), ids_of(bundle.val.images)
    assert sorted(train_ids + val_ids) == [0, 1, 2, 3, 4]  # val carved from trainval
    assert ids_of(bundle.test.images) == [5, 6, 7]  # the test list, in order
    for split, ids, difficult in ((bundle.train, train_ids, 0.0), (bundle.val, val_ids, -1.0),
                                  (bundle.test, [5, 6, 7], -1.0)):
        assert torch.equal(split.targets, torch.stack([voc_target(i, difficult) for i in ids]))
    assert bundle.test.targets[0, VOC_CLASSES.index("bird")] == 1  # a non-difficult bird exists


@pytest.mark.parametrize("policy,value", [("positive", 1.0), ("ignore", -1.0), ("negative", 0.0)])
def test_voc_difficult_policy(voc_root, policy, value) -> None:
    bundle = load_dataset("voc2007", data_dir=voc_root, val_size=1, img_size=8, difficult=policy,
                          difficult_eval=policy)
    assert bundle.test.targets[0, VOC_CLASSES.index("sofa")] == value
    assert bundle.test.targets[2, VOC_CLASSES.index("cow")] == value
    for split in (bundle.train, bundle.val):
        for row, i in zip(split.targets, ids_of(split.images)):
            assert torch.equal(row, voc_target(i, value))


def test_voc_layout_variants_and_missing_data(tmp_path, voc_root, monkeypatch) -> None:
    monkeypatch.delenv("ATTNVISION_DATA", raising=False)
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    direct = load_dataset("voc2007", data_dir=voc_root / "VOCdevkit" / "VOC2007", val_size=1, img_size=8)
    assert len(direct.test) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/trainval.txt(.|\n)*VOCtrainval_06-Nov-2007"):
        load_dataset("voc2007", data_dir=tmp_path / "empty", val_size=1)
    (voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test set not found"):
        load_dataset("voc2007", data_dir=voc_root, val_size=1)
    with pytest.raises(ValueError, match="difficult_eval must be one of"):
        load_dataset("voc2007", data_dir=voc_root, val_size=1, difficult_eval="hard")


def test_voc_bad_annotations_name_the_file(voc_root) -> None:
    voc = voc_root / "VOCdevkit" / "VOC2007"
    (voc / "Annotations" / "000003.xml").write_text("<annotation><object><name>dog</name>")
    with pytest.raises(ValueError, match=r"000003\.xml is not valid XML"):
        load_dataset("voc2007", data_dir=voc_root, val_size=1, img_size=8)
    (voc / "Annotations" / "000003.xml").write_text(voc_xml([("dragon", 0)]))
    with pytest.raises(ValueError, match=r"000003\.xml: unknown class 'dragon'"):
        load_dataset("voc2007", data_dir=voc_root, val_size=1, img_size=8)
    (voc / "Annotations" / "000003.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"000003\.xml is missing"):
        load_dataset("voc2007", data_dir=voc_root, val_size=1, img_size=8)
    write_voc(voc_root / "fresh")
    (voc_root / "fresh" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000006.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"000006\.jpg"):
        load_dataset("voc2007", data_dir=voc_root / "fresh", val_size=1, img_size=8)


def test_voc_ids_cannot_leave_the_dataset_folder(voc_root) -> None:
    voc = voc_root / "VOCdevkit" / "VOC2007"
    outside = voc_root / "outside"  # a readable annotation and image outside the VOC2007 folder
    outside.mkdir()
    (outside / "x.xml").write_text(voc_xml([("dog", 0)]))
    solid(outside / "x.jpg", 50)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000000\n../../../outside/x\n000001\n")
    with pytest.raises(ValueError, match=r"trainval\.txt: '\.\./\.\./\.\./outside/x\.xml' points outside"):
        load_dataset("voc2007", data_dir=voc_root, val_size=1, img_size=8)


# ---------------------------------------------------------------------------------------------
# COCO 2014

# Non-contiguous ids, listed out of order: contiguous indices follow the sorted ids.
COCO_CATEGORIES = [{"supercategory": "animal", "id": 18, "name": "dog"},
                   {"supercategory": "person", "id": 1, "name": "person"},
                   {"supercategory": "indoor", "id": 90, "name": "toothbrush"},
                   {"supercategory": "vehicle", "id": 3, "name": "car"}]


def write_coco(root: Path) -> Path:
    """train2014: images 1-5 (5 unannotated); val2014: images 11-13 (12 unannotated)."""
    spec = {"train2014": {1: [1, 18], 2: [3], 3: [90, 90, 1], 4: [18], 5: []},
            "val2014": {11: [3, 1], 12: [], 13: [90]}}
    (root / "annotations").mkdir(parents=True)
    for part, images in spec.items():
        annotations, entries = [], []
        for image_id, cats in images.items():
            name = f"COCO_{part}_{image_id:012d}.jpg"
            solid(root / part / name, 20 * image_id + 10 if image_id < 10 else 20 * (image_id - 10) + 10)
            entries.append({"license": 1, "file_name": name, "height": 14, "width": 20, "id": image_id})
            for cat in cats:
                annotations.append({"segmentation": [[1, 1, 5, 1, 5, 5]], "area": 16.0, "iscrowd": 0,
                                    "image_id": image_id, "bbox": [1, 1, 4, 4], "category_id": cat,
                                    "id": len(annotations) + 100 * image_id})
        data = {"info": {}, "licenses": [], "images": entries[::-1], "annotations": annotations,
                "categories": COCO_CATEGORIES}
        (root / "annotations" / f"instances_{part}.json").write_text(json.dumps(data))
    return root


def test_coco_contiguous_classes_and_empty_images(tmp_path) -> None:
    root = write_coco(tmp_path / "coco")
    bundle = load_dataset("coco2014", data_dir=tmp_path, val_size=1, img_size=10)  # found as <dir>/coco
    assert bundle.class_names == ["person", "car", "dog", "toothbrush"]  # sorted ids 1, 3, 18, 90
    expected = {1: [1, 0, 1, 0], 2: [0, 1, 0, 0], 3: [1, 0, 0, 1], 4: [0, 0, 1, 0]}
    ids = ids_of(torch.cat([bundle.train.images, bundle.val.images]))
    assert sorted(ids) == [1, 2, 3, 4] and len(bundle.val) == 1  # image 5 (no instance) dropped
    targets = torch.cat([bundle.train.targets, bundle.val.targets])
    assert torch.equal(targets, torch.tensor([expected[i] for i in ids], dtype=torch.float32))
    assert ids_of(bundle.test.images) == [1, 3]  # val2014 images 11, 13 (sorted by id)
    assert torch.equal(bundle.test.targets, torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 1]]))

    kept = load_dataset("coco2014", data_dir=root, val_size=1, img_size=10, keep_empty=True)
    assert len(kept.train) + len(kept.val) == 5 and len(kept.test) == 3
    assert torch.equal(kept.test.targets[1], torch.zeros(4))


def test_coco_bad_files_name_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ATTNVISION_DATA", raising=False)
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"instances_\{train,val\}2014.json(.|\n)*cocodataset.org"):
        load_dataset("coco2014", data_dir=tmp_path, val_size=1)
    root = write_coco(tmp_path / "c")
    train_json = root / "annotations" / "instances_train2014.json"
    good = train_json.read_text()
    train_json.write_text(good[:-10])
    with pytest.raises(ValueError, match=r"instances_train2014\.json is not valid JSON"):
        load_dataset("coco2014", data_dir=root, val_size=1)
    data = json.loads(good)
    data["annotations"][0]["category_id"] = 55
    train_json.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_train2014\.json: an annotation refers to category id 55"):
        load_dataset("coco2014", data_dir=root, val_size=1)
    del data["categories"]
    train_json.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_train2014\.json is not a COCO instances file"):
        load_dataset("coco2014", data_dir=root, val_size=1)
    data = json.loads(good)
    data["categories"] = data["categories"][:3]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 3]
    train_json.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="different categories"):
        load_dataset("coco2014", data_dir=root, val_size=1)
    train_json.write_text(good)
    (root / "val2014" / "COCO_val2014_000000000013.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000000013.jpg"):
        load_dataset("coco2014", data_dir=root, val_size=1, img_size=8)


@pytest.mark.parametrize("file_name", ["../../outside/x.jpg", "/etc/x.jpg"])
def test_coco_file_names_cannot_leave_the_dataset_folder(tmp_path, file_name) -> None:
    root = write_coco(tmp_path / "coco")
    solid(tmp_path / "outside" / "x.jpg", 50)
    train_json = root / "annotations" / "instances_train2014.json"
    data = json.loads(train_json.read_text())
    data["images"][0]["file_name"] = file_name
    train_json.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"instances_train2014\.json: '{file_name}' points outside .*train2014"):
        load_dataset("coco2014", data_dir=root, val_size=1, img_size=8)


# ---------------------------------------------------------------------------------------------
# Generic image lists


def write_images(root: Path, n: int) -> list[str]:
    return [solid(root / "img" / f"{i}.png", 20 * i + 10).relative_to(root).as_posix() for i in range(n)]


def test_image_list_csv_semicolons_and_spaces(tmp_path) -> None:
    names = write_images(tmp_path, 6)
    (tmp_path / "train.csv").write_text("path,labels,note\n" + "".join(
        f"{p},{lab},x\n" for p, lab in zip(names[:4], ["potted plant;dog", "dog", "", "cat ; dog"])))
    (tmp_path / "test.csv").write_text(f"path,labels\n{names[4]},cat dog\n{tmp_path / names[5]},zebra\n")
    bundle = load_dataset("image-list", data_dir=tmp_path, val_size=1, img_size=9)  # default file names
    assert bundle.class_names == ["cat", "dog", "potted plant", "zebra"]  # sorted union of both files
    expected = {0: [0, 1, 1, 0], 1: [0, 1, 0, 0], 2: [0, 0, 0, 0], 3: [1, 1, 0, 0]}
    ids = ids_of(torch.cat([bundle.train.images, bundle.val.images]))
    assert torch.equal(torch.cat([bundle.train.targets, bundle.val.targets]),
                       torch.tensor([expected[i] for i in ids], dtype=torch.float32))
    # whitespace-separated file; absolute paths are kept
    assert torch.equal(bundle.test.targets, torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 1]]))
    assert ids_of(bundle.test.images) == [4, 5] and bundle.test.images.shape[2:] == (9, 9)


def test_image_list_json_and_given_classes(tmp_path) -> None:
    names = write_images(tmp_path / "data", 5)
    lists = tmp_path / "data"
    (lists / "tr.json").write_text(json.dumps([{"path": p, "labels": lab} for p, lab in
                                               zip(names[:4], [["b"], ["a", "b"], [], ["c"]])]))
    (lists / "te.json").write_text(json.dumps([{"path": names[4], "labels": ["a"]}]))
    bundle = load_dataset("image-list", val_size=1, train_file=lists / "tr.json", test_file=lists / "te.json",
                          img_size=7, class_names=["c", "b", "a", "unused"])
    assert bundle.class_names == ["c", "b", "a", "unused"]
    assert torch.equal(bundle.test.targets, torch.tensor([[0.0, 0, 1, 0]]))
    default_val = load_dataset("image-list", val_size=None, train_file=lists / "tr.json",
                               test_file=lists / "te.json", img_size=7)
    assert len(default_val.val) == 1 and default_val.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"tr\.json entry 3: label 'c' is not among the class names"):
        load_dataset("image-list", train_file=lists / "tr.json", test_file=lists / "te.json", class_names=["a", "b"])


def write_image_list(root: Path) -> Path:
    names = write_images(root, 6)
    (root / "train.csv").write_text("path,labels\n" + "".join(f"{p},{lab}\n" for p, lab in
                                                               zip(names[:4], ["a;b", "b", "", "c"])))
    (root / "test.csv").write_text(f"path,labels\n{names[4]},a\n{names[5]},c\n")
    return root


@pytest.mark.parametrize("name, write, kw", [
    ("voc2007", write_voc, {"val_size": 2}),
    ("coco2014", write_coco, {"val_size": 1}),
    ("image-list", write_image_list, {"val_size": 1}),
])
def test_streamed_readers_keep_the_files_of_the_in_memory_splits(tmp_path, name, write, kw) -> None:
    """With ``stream`` every reader of image files keeps, per split, the files whose decoded pixels
    and targets are the in-memory split's (policies and validation carving applied alike)."""
    write(tmp_path / "data")
    memory, streamed = (load_dataset(name, tmp_path / "data", img_size=12, stream=s, **kw) for s in (False, True))
    assert streamed.streamed and not memory.streamed and streamed.img_size == (12, 12)
    for part in ("train", "val", "test"):
        m, s = getattr(memory, part), getattr(streamed, part)
        assert torch.equal(s.targets, m.targets) and torch.equal(s.load().images, m.images)


def test_image_list_errors_name_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ATTNVISION_DATA", raising=False)
    names = write_images(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match="train_file=PATH"):
        load_dataset("image-list", val_size=1)
    (tmp_path / "train.csv").write_text(f"file,tags\n{names[0]},a\n")
    (tmp_path / "test.json").write_text(json.dumps([{"path": names[1], "labels": "a"}]))
    with pytest.raises(ValueError, match=r"train\.csv: the first row must be a header naming the columns"):
        load_dataset("image-list", data_dir=tmp_path, val_size=1)
    (tmp_path / "train.csv").write_text(f"path,labels\n{names[0]},a\nimg/none.png,a\n")
    with pytest.raises(ValueError, match=r"test\.json entry 0: expected"):
        load_dataset("image-list", data_dir=tmp_path, val_size=1)
    (tmp_path / "test.json").write_text(json.dumps([{"path": names[1], "labels": ["a"]}]))
    with pytest.raises(FileNotFoundError, match=r"img/none\.png"):
        load_dataset("image-list", data_dir=tmp_path, val_size=1)
    (tmp_path / "test.json").write_text("[{")
    with pytest.raises(ValueError, match=r"test\.json is not valid JSON"):
        load_dataset("image-list", data_dir=tmp_path, val_size=1)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST scenes


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def scenes(data_dir: Path, **kw):
    return load_dataset("fashion-mnist-scenes", data_dir=data_dir, **{"val_size": 30, "n_train": 150,
                                                                        "n_test": 40, **kw})


def test_scenes_labels_boxes_and_pixels_agree(fmnist_dir, cache) -> None:
    bundle = scenes(fmnist_dir, canvas_size=70)
    assert bundle.task == "multilabel" and bundle.num_classes == 10 and bundle.in_chans == 1
    assert bundle.train.images.shape == (120, 1, 70, 70) and len(bundle.val) == 30 and len(bundle.test) == 40
    assert 0 < bundle.mean[0] < 1 and 0 < bundle.std[0] < 1
    for part in ("train", "val", "test"):
        split, boxes = getattr(bundle, part), bundle.extras["boxes"][part]
        assert len(boxes) == len(split)
        outside = torch.ones(len(split), 70, 70, dtype=torch.bool)
        for i, b in enumerate(boxes):
            assert b.dtype == torch.int64 and b.shape[1] == 5 and 1 <= len(b) <= 4
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 70).all() and (b[:, 3] <= 70).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            expected = torch.zeros(10)
            expected[b[:, 4]] = 1
            assert torch.equal(split.targets[i], expected)  # labels = classes of the boxes
            for x0, y0, x1, y1, _ in b.tolist():
                outside[i, y0:y1, x0:x1] = False
        # Tight boxes: every non-zero pixel lies in some box (also checks val kept its own boxes).
        assert (split.images[:, 0][outside] == 0).all()
    sizes = torch.cat([b[:, 2:4] - b[:, :2] for b in bundle.extras["boxes"]["train"]])
    assert sizes.max() <= 42 and sizes.max() > 28  # items resized up to 1.5 × 28 px


def test_scenes_deterministic_and_cached(fmnist_dir, cache, monkeypatch) -> None:
    first = scenes(fmnist_dir)
    files = list((cache / "fashion-mnist-scenes").glob("*.pt"))
    assert len(files) == 1 and not list(files[0].parent.glob(".*"))  # no temporary left behind

    def fail(*args, **kw):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(scenes_module, "build_scenes", fail)
    again = scenes(fmnist_dir)  # cache hit
    monkeypatch.undo()
    monkeypatch.setenv("ATTNVISION_CACHE", str(cache.parent / "other-cache"))
    rebuilt = scenes(fmnist_dir)  # same parameters, fresh build
    for other in (again, rebuilt):
        for part in ("train", "val", "test"):
            assert torch.equal(getattr(first, part).images, getattr(other, part).images)
            assert torch.equal(getattr(first, part).targets, getattr(other, part).targets)
            assert all(torch.equal(a, b) for a, b in zip(first.extras["boxes"][part], other.extras["boxes"][part]))
        assert first.mean == other.mean
    resplit = scenes(fmnist_dir, seed=5)  # the validation seed does not change the scenes
    assert torch.equal(torch.cat([resplit.train.images, resplit.val.images]).sum(0),
                       torch.cat([first.train.images, first.val.images]).sum(0))
    assert not torch.equal(scenes(fmnist_dir, scene_seed=1).test.images, first.test.images)


def test_scenes_compose_by_max() -> None:
    # White squares: the canvas must be 255 exactly on the union of the boxes and 0 elsewhere.
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    out = scenes_module.compose_scenes(images, torch.tensor([0, 4, 9]), 50, 64, torch.Generator().manual_seed(0))
    union = torch.zeros(50, 64, 64, dtype=torch.bool)
    for i, b in enumerate(out["boxes"].split(out["counts"].tolist())):
        for x0, y0, x1, y1, _ in b.tolist():
            assert 21 <= x1 - x0 == y1 - y0 <= 42  # a full square keeps its whole box
            union[i, y0:y1, x0:x1] = True
    assert torch.equal(out["images"][:, 0], union.to(torch.uint8) * 255)


def test_scene_clutter_lies_outside_the_boxes_that_stay_the_items_own() -> None:
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)  # white items: fragments are 0.4 · 255 → 102

    def compose(clutter: int) -> dict:
        return scenes_module.compose_scenes(images, torch.tensor([0, 4, 9]), 40, 64, torch.Generator().manual_seed(0),
                                            (1, 1), clutter)

    plain, cluttered = compose(0), compose(6)
    assert torch.equal(plain["boxes"], cluttered["boxes"]) and torch.equal(plain["targets"], cluttered["targets"])
    inside = torch.zeros(40, 64, 64, dtype=torch.bool)
    for i, (x0, y0, x1, y1, _) in enumerate(plain["boxes"].tolist()):
        inside[i, y0:y1, x0:x1] = True
    canvas = cluttered["images"][:, 0]
    assert (canvas[inside] == 255).all()  # the item is unchanged (the max keeps it)
    assert set(canvas[~inside].unique().tolist()) == {0, 102}  # fragments at low contrast outside it
    per_scene = ((canvas == 102) & ~inside).flatten(1).sum(1)
    assert (per_scene > 0).float().mean() > 0.9 and per_scene.max() <= 6 * 14 * 14
    assert (plain["images"][:, 0][~inside] == 0).all()
    assert torch.equal(compose(6)["images"], cluttered["images"])  # deterministic


def test_scene_clutter_option_keeps_the_cache_of_scenes_without_it(fmnist_dir, cache) -> None:
    import hashlib
    import json

    plain = load_dataset("fashion-mnist-scenes-single", data_dir=fmnist_dir, val_size=10, n_train=60, n_test=20)
    cluttered = load_dataset("fashion-mnist-scenes-single", data_dir=fmnist_dir, val_size=10, n_train=60, n_test=20,
                             clutter=4)
    for part in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(plain.extras["boxes"][part], cluttered.extras["boxes"][part]))
        assert torch.equal(getattr(plain, part).targets, getattr(cluttered, part).targets)
        assert not torch.equal(getattr(plain, part).images, getattr(cluttered, part).images)
    _, source_hash = scenes_module.read_sources(fmnist_dir)
    params = {"version": 1, "canvas_size": 64, "n_train": 60, "n_test": 20, "scene_seed": 0, "items": [1, 1],
              "scales": [0.75, 1.5], "source": source_hash}  # the key of every scene cache before clutter existed
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    files = {f.name for f in (cache / "fashion-mnist-scenes").glob("*.pt")}
    assert len(files) == 2 and f"scenes-64px-{key}.pt" in files
    with pytest.raises(ValueError, match=r"clutter must be an integer in 0\.\.32"):
        scenes(fmnist_dir, clutter=-1)


def test_scenes_source_images_stay_in_their_split(tmp_path, cache) -> None:
    # Blank Fashion-MNIST training images: train scenes must be blank, test scenes not.
    root = tiny_fashion_mnist(tmp_path / "fm", n_train=50, n_test=20)
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((50, 28, 28), np.uint8))
    bundle = scenes(root, val_size=5, n_train=20, n_test=10)
    assert bundle.train.images.max() == 0 and bundle.test.images.max() > 0


def test_scenes_arguments_checked(fmnist_dir, cache) -> None:
    with pytest.raises(ValueError, match=r"canvas_size must be in 64\.\.112"):
        scenes(fmnist_dir, canvas_size=48)
    with pytest.raises(ValueError, match="n_train and n_test must be positive"):
        scenes(fmnist_dir, n_test=0)


def test_registered() -> None:
    assert {"voc2007", "coco2014", "image-list", "fashion-mnist-scenes"} <= set(list_datasets())


# ---------------------------------------------------------------- the paper-table recipes, dry-run


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory) -> Path:
    """A torchvision-format resnet101 file (random weights, ImageNet's 1000-class fc): what WEIGHTS names."""
    from attnvision import create_model

    state = {k.removeprefix("head."): v for k, v in create_model("resnet101", 1000).state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet101.pth"
    torch.save(state, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("recipe, write, runs", [
    ("csra_voc07", write_voc, {"csra": 94.7, "baseline": 92.9}),
    ("csra_coco", write_coco, {"csra": 83.5, "baseline": 79.4}),
    ("q2l_coco", write_coco, {"q2l": 84.9}),
])
def test_paper_recipe_runs_end_to_end_on_fixtures(tmp_path, imagenet_like_weights, recipe, write, runs):
    """Each benchmarks/<recipe>.sh, with DRY_RUN=1 (2 steps on the CPU), on fixtures in the official
    layout: it streams, loads the backbone from WEIGHTS, trains, and prints the paper's number beside ours."""
    write(tmp_path / "data")
    env = {**os.environ, "DRY_RUN": "1", "DATA_DIR": str(tmp_path / "data"), "WEIGHTS": str(imagenet_like_weights),
           "OUT": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / f"{recipe}.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "streaming 2 training images" in done.stdout and "loaded 624 tensors" in done.stdout
    assert "Warning" not in done.stderr
    for run, paper in runs.items():
        metrics = json.loads((tmp_path / "runs" / run / "metrics.json").read_text())
        assert metrics["model"] == "resnet101" and metrics["epochs"] == 1
        assert re.search(rf"{tmp_path / 'runs' / run}: test mAP [\d.]+ .*: {paper}$", done.stdout, re.MULTILINE)
    for checkpoint in (tmp_path / "runs").rglob("*.pt"):
        checkpoint.unlink()  # 0.2-0.4 GB each
