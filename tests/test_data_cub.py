"""The CUB-200-2011 reader on a tiny copy of its layout (index files, images/, bounding
boxes) written here, and the class split of Chen et al. on the 200 classes."""

import math

import numpy as np
import pytest
from PIL import Image

from metarobust.data import cub
from metarobust.data.cub import cub_split

CLASSES = [f"{i:03d}.Bird_{i}" for i in range(1, 9)]


def test_split_rule_on_200_classes():
    splits = [cub_split(i) for i in range(200)]
    assert [splits.count(s) for s in ("train", "val", "test")] == [100, 50, 50]
    # write_CUB_filelist.py of Chen et al.: base i % 2 == 0, val i % 4 == 1, novel i % 4 == 3
    assert splits[:8] == ["train", "val", "train", "test"] * 2
    assert all(s == "train" for s in splits[0::2])


@pytest.fixture
def tree(tmp_path):
    """8 classes (listed out of order), 2 images each, with boxes."""
    folder = tmp_path / "CUB_200_2011"
    rng = np.random.default_rng(0)
    images, labels, boxes = [], [], []
    image_id = 0
    for c in (3, 0, 7, 1, 5, 2, 6, 4):
        for j in range(2):
            image_id += 1
            rel = f"{CLASSES[c]}/{CLASSES[c][4:]}_{j:04d}_{image_id}.jpg"
            (folder / "images" / CLASSES[c]).mkdir(parents=True, exist_ok=True)
            w, h = 20 + 3 * j, 16 + c
            arr = rng.integers(0, 256, (h, w, 3) if (c, j) != (2, 1) else (h, w),
                               dtype=np.uint8)  # one grayscale image, as CUB has
            Image.fromarray(arr).save(folder / "images" / rel, quality=95)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            boxes.append(f"{image_id} {1.5 + j} {2.0} {10.25} {9.0 + j}")
    (folder / "classes.txt").write_text(
        "\n".join(f"{i + 1} {name}" for i, name in reversed(list(enumerate(CLASSES)))) + "\n")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return tmp_path, folder, images, labels, boxes


def reference(folder, images, labels, boxes, split, size, crop):
    """Independent reading: class k (0-based, sorted names) is in split by k % 4."""
    wanted = {"train": (0, 2), "val": (1,), "test": (3,)}[split]
    chosen = [k for k in range(len(CLASSES)) if k % 4 in wanted]
    out, labs = [], []
    for c, k in enumerate(chosen):
        for line, lab, bline in zip(images, labels, boxes):
            if int(lab.split()[1]) - 1 != k:
                continue
            with Image.open(folder / "images" / line.split()[1]) as im:
                im = im.convert("RGB")
                if crop:
                    x, y, w, h = map(float, bline.split()[1:])
                    im = im.crop((math.floor(x), math.floor(y), min(im.width, math.ceil(x + w)),
                                  min(im.height, math.ceil(y + h))))
                out.append(np.asarray(im.resize((size, size), Image.BOX)).transpose(2, 0, 1))
            labs.append(c)
    return [CLASSES[k] for k in chosen], np.stack(out), labs


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("crop", [False, True])
def test_round_trip(tree, split, crop):
    root, folder, images, labels, boxes = tree
    ds = cub(root, split, image_size=12, crop=crop, progress=False)
    names, want, labs = reference(folder, images, labels, boxes, split, 12, crop)
    assert ds.class_names == names
    assert ds.labels.tolist() == labs
    np.testing.assert_array_equal(ds.images, want)
    assert ds.metadata["crop"] is crop and ds.metadata["split"] == split


def test_root_may_be_the_folder_itself(tree):
    root, folder = tree[0], tree[1]
    a = cub(root, "val", image_size=8, progress=False)
    b = cub(folder, "val", image_size=8, progress=False, workers=1)
    np.testing.assert_array_equal(a.images, b.images)


def test_bad_arguments(tree):
    root = tree[0]
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'base'"):
        cub(root, "base")
    with pytest.raises(TypeError, match="crop"):
        cub(root, "train", crop="yes")
    with pytest.raises(FileNotFoundError, match="root"):
        cub(root / "missing", "train")
    with pytest.raises(FileNotFoundError, match="images.txt"):
        cub(root / "CUB_200_2011" / "images", "train")


@pytest.mark.parametrize("file, text, match", [
    ("classes.txt", "1 001.Bird_1\n1 002.Bird_2\n", "id 1 listed twice"),
    ("classes.txt", "x 001.Bird_1\n", "is not an integer"),
    ("classes.txt", "", "is empty"),
    ("images.txt", "1\n", "expected 2 fields"),
    ("image_class_labels.txt", "1 1\n", "list different image ids"),
    ("image_class_labels.txt", None, "uses class ids \\[9\\]"),
    ("image_class_labels.txt", "seven", "expected 2 fields"),
    ("bounding_boxes.txt", "1 2 3 4\n", "expected 5 fields"),
    ("bounding_boxes.txt", None, "empty or not finite"),
    ("bounding_boxes.txt", "1 0 0 5 5\n", "has no box for image"),
])
def test_bad_index_files(tree, file, text, match):
    root, folder = tree[0], tree[1]
    path = folder / file
    if text is None:  # class 9 for the first image; a negative width for every box
        lines = [ln.split() for ln in path.read_text().splitlines()]
        if file == "image_class_labels.txt":
            lines[0][1] = "9"
        else:
            for parts in lines:
                parts[3] = "-1"
        text = "\n".join(" ".join(parts) for parts in lines) + "\n"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        cub(root, "train", crop=True, progress=False)
    assert str(folder) in str(info.value)


def test_missing_and_damaged_files(tree):
    root, folder, images = tree[0], tree[1], tree[2]
    (folder / "bounding_boxes.txt").unlink()
    cub(root, "train", progress=False)  # boxes are only read for crop=True
    with pytest.raises(FileNotFoundError, match="bounding_boxes.txt"):
        cub(root, "train", crop=True, progress=False)
    first = folder / "images" / images[0].split()[1]  # a class-3 image: test split
    first.write_bytes(first.read_bytes()[:50])
    with pytest.raises(ValueError, match="cannot decode image .*" + first.name):
        cub(root, "test", progress=False)
    first.unlink()
    with pytest.raises(FileNotFoundError, match=first.name):
        cub(root, "test", progress=False)


def test_box_outside_image(tree):
    root, folder = tree[0], tree[1]
    lines = (folder / "bounding_boxes.txt").read_text().splitlines()
    lines = [" ".join([ln.split()[0], "500", "500", "3", "3"]) for ln in lines]
    (folder / "bounding_boxes.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="lies outside"):
        cub(root, "val", crop=True, progress=False)
