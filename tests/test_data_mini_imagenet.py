"""The miniImageNet reader on tiny files written here in the three published forms: the
learn2learn-style cache pickle, the Python 2 pickles of MetaOptNet, and the Ravi-Larochelle
CSV over an image folder."""

import pickle

import numpy as np
import pytest
from _py2pickle import write_py2
from PIL import Image

import metarobust as mr
from metarobust.data import mini_imagenet

WNIDS = ["n02110341", "n01930112", "n03127925"]  # three test classes of Ravi & Larochelle


def box(hwc, size):
    """The documented resize: PIL area averaging, channels first."""
    if hwc.shape[:2] != (size, size):
        hwc = np.asarray(Image.fromarray(hwc, "RGB").resize((size, size), Image.BOX))
    return hwc.transpose(2, 0, 1)


def pixels(n, h=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, h, 3), dtype=np.uint8)


@pytest.fixture
def cache(tmp_path):
    data = pixels(7)
    class_dict = {WNIDS[0]: [4, 0], WNIDS[1]: [6, 2, 1], WNIDS[2]: [3, 5]}
    with open(tmp_path / "mini-imagenet-cache-test.pkl", "wb") as f:
        pickle.dump({"image_data": data, "class_dict": class_dict}, f, protocol=4)
    return tmp_path, data, class_dict


@pytest.mark.parametrize("size", [10, 6])
def test_cache_pickle_round_trips(cache, size):
    root, data, class_dict = cache
    ds = mini_imagenet(root, "test", image_size=size)
    names = sorted(class_dict)
    assert ds.class_names == names
    order = [i for name in names for i in class_dict[name]]
    assert ds.labels.tolist() == [c for c, name in enumerate(names) for _ in class_dict[name]]
    assert ds.images.shape == (7, 3, size, size)
    for row, i in enumerate(order):
        np.testing.assert_array_equal(ds.images[row], box(data[i], size))
    assert ds.metadata["file"] == "mini-imagenet-cache-test.pkl"
    assert ds.metadata["published_split"] is False  # 3 of the 20 test classes


def test_published_split_flag(tmp_path):
    val = mr.data._benchmark.shipped_classes("mini_imagenet", "val")
    data = pixels(len(val), h=2)
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": data, "class_dict": {w: [i] for i, w in enumerate(val)}}, f)
    ds = mini_imagenet(tmp_path, "val", image_size=2)
    assert ds.num_classes == 16 and ds.metadata["published_split"] is True


def test_metaoptnet_python2_pickle(tmp_path):
    data = pixels(5, seed=1)
    data[0, 0, 0] = [255, 200, 129]  # bytes above 127: a Python 2 string needs latin1
    labels = [81, 80, 81, 82, 80]
    cat = {b"n01981276": 81, b"n01930112": 80, b"n02099601": 82}
    write_py2(tmp_path / "miniImageNet_category_split_test.pickle",
              {b"data": data, b"labels": labels, b"catname2label": cat})
    with pytest.raises(UnicodeDecodeError):  # what a plain pickle.load does with these files
        pickle.loads((tmp_path / "miniImageNet_category_split_test.pickle").read_bytes())
    ds = mini_imagenet(tmp_path, "test", image_size=10)
    assert ds.class_names == ["n01930112", "n01981276", "n02099601"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2]
    for row, i in enumerate([1, 4, 0, 2, 3]):
        np.testing.assert_array_equal(ds.images[row], box(data[i], 10))


def test_metaoptnet_without_names_keeps_label_order(tmp_path):
    data = pixels(3)
    write_py2(tmp_path / "miniImageNet_category_split_train_phase_train.pickle",
              {b"data": data, b"labels": [10, 2, 10]})
    ds = mini_imagenet(tmp_path, "train", image_size=10)
    assert ds.class_names == ["2", "10"] and ds.labels.tolist() == [0, 1, 1]


def test_ravi_csv_over_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    rng = np.random.default_rng(3)
    for wnid in ["n01855672", "n02091244"]:
        for j in range(2):
            name = f"{wnid}{j:08d}.jpg"
            Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(
                tmp_path / "images" / name, quality=95)
            rows.append(f"{name},{wnid}")
    (tmp_path / "val.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    ds = mini_imagenet(tmp_path, "val", image_size=8, progress=False)
    assert ds.class_names == ["n01855672", "n02091244"] and ds.labels.tolist() == [0, 0, 1, 1]
    for row, line in enumerate(rows):
        with Image.open(tmp_path / "images" / line.split(",")[0]) as im:
            want = np.asarray(im.convert("RGB").resize((8, 8), Image.BOX)).transpose(2, 0, 1)
        np.testing.assert_array_equal(ds.images[row], want)
    assert ds.metadata["file"] == "val.csv"


@pytest.mark.parametrize("split, error", [("validation", ValueError), ("TRAIN", ValueError),
                                          (1, TypeError), (None, TypeError)])
def test_bad_split(cache, split, error):
    with pytest.raises(error, match="split"):
        mini_imagenet(cache[0], split)


def test_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        mini_imagenet(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="mini-imagenet-cache-train.pkl"):
        mini_imagenet(tmp_path, "train")
    with pytest.raises(ValueError, match="image_size"):
        mini_imagenet(tmp_path, "train", image_size=0)


def _write(root, obj):
    path = root / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.mark.parametrize("obj, match", [
    ({"images": pixels(2), "class_dict": {"a": [0, 1]}}, "'image_data' is missing"),
    ({"image_data": pixels(2)}, "'class_dict' is missing"),
    ([1, 2], "expected a pickled dict"),
    ({"image_data": pixels(2).astype(np.float32), "class_dict": {"a": [0, 1]}}, "uint8"),
    ({"image_data": pixels(2)[..., 0], "class_dict": {"a": [0, 1]}}, "shape"),
    ({"image_data": pixels(2), "class_dict": {"a": [0, 2]}}, "lists image 2"),
    ({"image_data": pixels(2), "class_dict": {"a": [0, -1]}}, "negative"),
    ({"image_data": pixels(3), "class_dict": {"a": [0, 1]}}, "exactly once"),
    ({"image_data": pixels(2), "class_dict": {"a": [0], "b": [0, 1]}}, "exactly once"),
    ({"image_data": pixels(2), "class_dict": {"a": ["x", "y"]}}, "integers"),
    ({"image_data": pixels(2), "class_dict": {}}, "non-empty"),
])
def test_bad_cache_contents(tmp_path, obj, match):
    path = _write(tmp_path, obj)
    with pytest.raises(ValueError, match=match) as info:
        mini_imagenet(tmp_path, "train")
    assert str(path) in str(info.value)


def test_truncated_and_foreign_pickles(tmp_path):
    path = _write(tmp_path, {"image_data": pixels(2), "class_dict": {"a": [0, 1]}})
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cannot be unpickled") as info:
        mini_imagenet(tmp_path, "train")
    assert str(path) in str(info.value)
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ValueError, match="os.system|posix.system"):
        mini_imagenet(tmp_path, "train")
    assert not marker.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_metaoptnet_label_count_mismatch(tmp_path):
    path = write_py2(tmp_path / "miniImageNet_category_split_val.pickle",
                     {b"data": pixels(3), b"labels": [1, 2]})
    with pytest.raises(ValueError, match="2 labels for 3 images") as info:
        mini_imagenet(tmp_path, "val")
    assert str(path) in str(info.value)


def test_shipped_ravi_larochelle_split():
    from metarobust.data._benchmark import shipped_classes

    parts = {s: shipped_classes("mini_imagenet", s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    everything = sum(parts.values(), [])
    assert len(set(everything)) == 100 and all(
        len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in everything)
    assert parts["test"] == sorted(
        "n01930112 n01981276 n02099601 n02110063 n02110341 n02116738 n02129165 n02219486 "
        "n02443484 n02871525 n03127925 n03146219 n03272010 n03544143 n03775546 n04146614 "
        "n04149813 n04418357 n04522168 n07613480".split())
    assert {"n01532829", "n13133613"} <= set(parts["train"])  # house finch, ear
    assert {"n01855672", "n09256479"} <= set(parts["val"])  # goose, coral reef


def test_learn2learn_validation_name(tmp_path):
    data = pixels(2)
    with open(tmp_path / "mini-imagenet-cache-validation.pkl", "wb") as f:
        pickle.dump({"image_data": data, "class_dict": {"n01855672": [1, 0]}}, f)
    ds = mini_imagenet(tmp_path, "val", image_size=10)
    np.testing.assert_array_equal(ds.images[0], data[1].transpose(2, 0, 1))
    assert ds.metadata["file"] == "mini-imagenet-cache-validation.pkl"
