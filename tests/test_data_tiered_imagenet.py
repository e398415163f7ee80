"""The tieredImageNet reader on tiny ``<split>_images_png.pkl`` / ``<split>_labels.pkl``
pairs written here as the authors' files are: Python 2 pickles of PNG buffers (numpy uint8,
as cv2.imencode returns them) and of the label dict with its two levels."""

import io
import pickle

import numpy as np
import pytest
from _py2pickle import write_py2
from PIL import Image

from metarobust.data import tiered_imagenet

SPECIFIC = [b"n01530575", b"n02123045", b"n01532829"]
GENERAL = [b"n01503061", b"n02120997"]  # birds, felines
SPECIFIC_OF = [0, 1, 2, 0, 1, 2, 0]  # image -> class
GENERAL_OF_CLASS = [0, 1, 0]


def png(seed, h=9, w=9, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def decoded(data, size):
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BOX)
        return np.asarray(im).transpose(2, 0, 1)


def labels_dict(specific=SPECIFIC_OF, general=None, replace=None):
    general = [GENERAL_OF_CLASS[s] for s in specific] if general is None else general
    d = {b"label_specific": np.array(specific, np.int32),
         b"label_general": np.array(general, np.int32),
         b"label_specific_str": list(SPECIFIC), b"label_general_str": list(GENERAL)}
    d.update(replace or {})
    return d


@pytest.fixture
def files(tmp_path):
    pngs = [png(i, h=9 + i % 2) for i in range(len(SPECIFIC_OF))]
    buffers = [np.frombuffer(p, np.uint8).reshape(-1, 1) for p in pngs]  # cv2.imencode shape
    write_py2(tmp_path / "train_images_png.pkl", buffers)
    write_py2(tmp_path / "train_labels.pkl", labels_dict())
    return tmp_path, pngs


@pytest.mark.parametrize("size", [9, 5])
def test_round_trip_python2_files(files, size):
    root, pngs = files
    ds = tiered_imagenet(root, "train", image_size=size, progress=False)
    assert ds.class_names == [s.decode() for s in SPECIFIC]
    order = [i for c in range(3) for i, s in enumerate(SPECIFIC_OF) if s == c]
    assert ds.labels.tolist() == [SPECIFIC_OF[i] for i in order]
    assert ds.images.shape == (7, 3, size, size)
    for row, i in enumerate(order):
        np.testing.assert_array_equal(ds.images[row], decoded(pngs[i], size))
    assert ds.metadata["general_names"] == [g.decode() for g in GENERAL]
    assert ds.metadata["class_general"] == GENERAL_OF_CLASS
    assert ds.metadata["published_split"] is False  # 3 classes, from two splits


def test_python3_files_in_subfolder(tmp_path):
    sub = tmp_path / "tiered-imagenet"
    sub.mkdir()
    pngs = [png(10 + i, mode="L" if i == 1 else "RGB") for i in range(7)]
    (sub / "test_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=4))
    d = {k.decode(): v for k, v in labels_dict().items()}
    d["label_specific_str"] = [s.decode() for s in SPECIFIC]
    d["label_general_str"] = [g.decode() for g in GENERAL]
    (sub / "test_labels.pkl").write_bytes(pickle.dumps(d, protocol=4))
    ds = tiered_imagenet(tmp_path, "test", image_size=9, progress=False, workers=2)
    order = [i for c in range(3) for i, s in enumerate(SPECIFIC_OF) if s == c]
    for row, i in enumerate(order):
        np.testing.assert_array_equal(ds.images[row], decoded(pngs[i], 9))


@pytest.mark.parametrize("split, error", [("validation", ValueError), ("", ValueError),
                                          (b"val", TypeError)])
def test_bad_split(files, split, error):
    with pytest.raises(error, match="split"):
        tiered_imagenet(files[0], split)


def test_missing_files(files):
    root = files[0]
    with pytest.raises(FileNotFoundError, match="val_images_png.pkl"):
        tiered_imagenet(root, "val")
    (root / "train_labels.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="train_labels.pkl"):
        tiered_imagenet(root, "train")


@pytest.mark.parametrize("labels, match", [
    (labels_dict(specific=[0, 1, 2, 0, 1, 2, 3], general=[0, 1, 0, 0, 1, 0, 0]),
     "label_specific holds label 3, out of range"),
    (labels_dict(general=[0, 1, 0, 0, 1, 0, 2]), "label_general holds label 2, out of range"),
    (labels_dict(specific=[0, 1, 2, 0, 1, 2]), "holds 7 images but .* labels 6"),
    (labels_dict(general=[0, 1, 0, 0, 1]), "label_general' holds 5 labels for 7 images"),
    (labels_dict(general=[0, 1, 0, 1, 1, 0, 0]), "two categories"),
    (labels_dict(specific=[0, 1, 0, 0, 1, 0, 0]), "have no images"),
    (labels_dict(specific=[0, 1, 2, 0, 1, 2, -1], general=[0] * 7), "negative"),
    ({b"label_specific": np.zeros(7, np.int32)}, "'label_specific_str' is missing"),
    (labels_dict(replace={b"label_specific_str": [b"a", b"a", b"b"]}), "distinct"),
    (labels_dict(replace={b"label_specific_str": b"abc"}), "list of names"),
    ([1, 2, 3], "expected a pickled dict"),
])
def test_bad_labels(files, labels, match):
    root = files[0]
    path = write_py2(root / "train_labels.pkl", labels)
    with pytest.raises(ValueError, match=match) as info:
        tiered_imagenet(root, "train", progress=False)
    assert str(root) in str(info.value) and (
        str(path) in str(info.value) or "train_images_png.pkl" in str(info.value))


def test_bad_images(files):
    root, pngs = files
    path = root / "train_images_png.pkl"
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="cannot be unpickled") as info:
        tiered_imagenet(root, "train", progress=False)
    assert str(path) in str(info.value)
    write_py2(path, pngs[:6])
    with pytest.raises(ValueError, match="holds 6 images but"):
        tiered_imagenet(root, "train", progress=False)
    write_py2(path, pngs[:6] + [pngs[6][:40]])
    with pytest.raises(ValueError, match=r"cannot decode image train_images_png.pkl\[6\]"):
        tiered_imagenet(root, "train", progress=False)
    write_py2(path, pngs[:6] + [3])
    with pytest.raises(ValueError, match="entry 6 is int"):
        tiered_imagenet(root, "train", progress=False)
    write_py2(path, {b"images": pngs})
    with pytest.raises(ValueError, match="pickled list"):
        tiered_imagenet(root, "train", progress=False)


def test_shipped_ren_split():
    from metarobust.data._benchmark import shipped_classes

    parts = {s: shipped_classes("tiered_imagenet", s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [351, 97, 160]
    everything = sum(parts.values(), [])
    assert len(set(everything)) == 608
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in everything)
    # categories stay whole: all dog breeds n02099267..n02102973 (sporting dogs) are val,
    # the food synsets n07565083.. are test
    assert {"n02099267", "n02101006", "n02102973"} <= set(parts["val"])
    assert {"n07565083", "n07613480", "n07768694"} <= set(parts["test"])
    assert "n01530575" in parts["train"]


def test_published_split_flag(tmp_path):
    from metarobust.data._benchmark import shipped_classes

    val = shipped_classes("tiered_imagenet", "val")
    write_py2(tmp_path / "val_images_png.pkl", [png(i, 2, 2) for i in range(len(val))])
    write_py2(tmp_path / "val_labels.pkl", {
        b"label_specific": np.arange(len(val)), b"label_general": np.zeros(len(val), np.int64),
        b"label_specific_str": [w.encode() for w in val], b"label_general_str": [b"n0"]})
    ds = tiered_imagenet(tmp_path, "val", image_size=2, progress=False)
    assert ds.num_classes == 97 and ds.metadata["published_split"] is True
