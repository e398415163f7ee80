"""CIFAR-FS and FC100 on a tiny CIFAR-100 written here as the official Python 2 pickles
(``cifar-100-python/{meta,train,test}``, bytes keys), and the split files shipped with the
package checked against the published class counts and superclasses."""

import numpy as np
import pytest
from _py2pickle import write_py2
from PIL import Image

from metarobust.data import cifar_fs, fc100
from metarobust.data._benchmark import shipped_classes

# CIFAR-100's superclasses (coarse label = position) and their fine classes
COARSE = [
    ("aquatic_mammals", "beaver dolphin otter seal whale"),
    ("fish", "aquarium_fish flatfish ray shark trout"),
    ("flowers", "orchid poppy rose sunflower tulip"),
    ("food_containers", "bottle bowl can cup plate"),
    ("fruit_and_vegetables", "apple mushroom orange pear sweet_pepper"),
    ("household_electrical_devices", "clock keyboard lamp telephone television"),
    ("household_furniture", "bed chair couch table wardrobe"),
    ("insects", "bee beetle butterfly caterpillar cockroach"),
    ("large_carnivores", "bear leopard lion tiger wolf"),
    ("large_man-made_outdoor_things", "bridge castle house road skyscraper"),
    ("large_natural_outdoor_scenes", "cloud forest mountain plain sea"),
    ("large_omnivores_and_herbivores", "camel cattle chimpanzee elephant kangaroo"),
    ("medium_mammals", "fox porcupine possum raccoon skunk"),
    ("non-insect_invertebrates", "crab lobster snail spider worm"),
    ("people", "baby boy girl man woman"),
    ("reptiles", "crocodile dinosaur lizard snake turtle"),
    ("small_mammals", "hamster mouse rabbit shrew squirrel"),
    ("trees", "maple_tree oak_tree palm_tree pine_tree willow_tree"),
    ("vehicles_1", "bicycle bus motorcycle pickup_truck train"),
    ("vehicles_2", "lawn_mower rocket streetcar tank tractor"),
]
FINE = sorted(f for _, fs in COARSE for f in fs.split())  # CIFAR-100 orders them by name
COARSE_OF = {f: k for k, (_, fs) in enumerate(COARSE) for f in fs.split()}
TADAM = {"train": [1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19], "val": [8, 11, 13, 16],
         "test": [0, 7, 12, 14]}  # Oreshkin et al., supplementary material


def test_shipped_cifar_fs_split():
    parts = {s: shipped_classes("cifar_fs", s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert sorted(sum(parts.values(), [])) == FINE  # disjoint, all of CIFAR-100
    assert set(parts["test"]) == set("baby bed bicycle chimpanzee fox leopard man pickup_truck "
                                     "plain poppy rocket rose snail sweet_pepper table "
                                     "telephone wardrobe whale woman worm".split())
    assert set(parts["val"]) == set("otter motorcycle television lamp crocodile shark butterfly "
                                    "beaver beetle tractor flatfish maple_tree camel crab sea "
                                    "cattle".split())


def test_shipped_fc100_split():
    for split, count in (("train", 60), ("val", 20), ("test", 20)):
        lines = shipped_classes("fc100", split)
        assert len(lines) == count
        sups = {line.split("/")[0] for line in lines}
        assert sups == {COARSE[k][0] for k in TADAM[split]}
        for line in lines:
            sup, fine = line.split("/")
            assert COARSE[COARSE_OF[fine]][0] == sup


def _write_cifar(root, per_class=(2, 1), seed=0, tweak=None):
    """cifar-100-python with ``per_class`` (train, test) images of every class; returns the
    pixels of each part."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    write_py2(folder / "meta", {b"fine_label_names": [f.encode() for f in FINE],
                                b"coarse_label_names": [c.encode() for c, _ in COARSE]})
    rng = np.random.default_rng(seed)
    parts = {}
    for part, count in zip(("train", "test"), per_class):
        fine = rng.permutation(np.repeat(np.arange(100), count)).tolist()
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        obj = {b"data": data, b"fine_labels": fine,
               b"coarse_labels": [COARSE_OF[FINE[f]] for f in fine],
               b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
               b"batch_label": f"{part} batch".encode()}
        if tweak is not None:
            tweak(part, obj)
        write_py2(folder / part, obj)
        parts[part] = (data, fine)
    return parts


def expected(parts, names, size):
    out, labels = [], []
    for c, name in enumerate(names):
        for part in ("train", "test"):
            data, fine = parts[part]
            for row, f in zip(data, fine):
                if FINE[f] == name:
                    img = row.reshape(3, 32, 32)
                    if size != 32:
                        hwc = Image.fromarray(img.transpose(1, 2, 0)).resize((size, size),
                                                                             Image.BOX)
                        img = np.asarray(hwc).transpose(2, 0, 1)
                    out.append(img)
                    labels.append(c)
    return np.stack(out), labels


@pytest.mark.parametrize("split, size", [("val", 32), ("test", 20), ("train", 32)])
def test_cifar_fs_round_trip(tmp_path, split, size):
    parts = _write_cifar(tmp_path)
    ds = cifar_fs(tmp_path, split, image_size=size)
    names = shipped_classes("cifar_fs", split)
    assert ds.class_names == names and ds.num_classes == {"train": 64, "val": 16,
                                                          "test": 20}[split]
    images, labels = expected(parts, names, size)
    np.testing.assert_array_equal(ds.images, images)
    assert ds.labels.tolist() == labels
    assert ds.metadata["class_superclass"] == [COARSE[COARSE_OF[n]][0] for n in names]


def test_fc100_round_trip(tmp_path):
    parts = _write_cifar(tmp_path / "deeper", per_class=(1, 2), seed=4)
    ds = fc100(tmp_path / "deeper" / "cifar-100-python", "test")
    names = [line.split("/")[1] for line in shipped_classes("fc100", "test")]
    assert ds.class_names == names and ds.num_classes == 20
    images, labels = expected(parts, names, 32)
    np.testing.assert_array_equal(ds.images, images)
    assert ds.labels.tolist() == labels
    assert set(ds.metadata["class_superclass"]) == {COARSE[k][0] for k in TADAM["test"]}


@pytest.mark.parametrize("reader", [cifar_fs, fc100])
def test_bad_arguments_and_missing_files(tmp_path, reader):
    with pytest.raises(FileNotFoundError, match="root"):
        reader(tmp_path / "none", "train")
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        reader(tmp_path, "train")
    _write_cifar(tmp_path)
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'novel'"):
        reader(tmp_path, "novel")
    with pytest.raises(TypeError, match="image_size"):
        reader(tmp_path, "train", image_size=2.5)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(FileNotFoundError, match="test"):
        reader(tmp_path, "train")


def _drop(key):
    return lambda part, obj: obj.pop(key) if part == "train" else None


def _set(key, value):
    return lambda part, obj: obj.__setitem__(key, value(obj)) if part == "train" else None


@pytest.mark.parametrize("tweak, match", [
    (_drop(b"data"), "'data' is missing"),
    (_drop(b"fine_labels"), "'fine_labels' is missing"),
    (_set(b"fine_labels", lambda o: o[b"fine_labels"][:-1]), "199 labels for 200 images"),
    (_set(b"coarse_labels", lambda o: o[b"coarse_labels"] + [0]), "201 labels for 200 images"),
    (_set(b"fine_labels", lambda o: o[b"fine_labels"][:-1] + [100]), "label 100, out of range"),
    (_set(b"coarse_labels", lambda o: o[b"coarse_labels"][:-1] + [20]), "label 20, out of range"),
    (_set(b"data", lambda o: o[b"data"][:, :3000]), "3072"),
    (_set(b"data", lambda o: o[b"data"].astype(np.int16)), "uint8"),
])
def test_bad_part_files(tmp_path, tweak, match):
    _write_cifar(tmp_path, tweak=tweak)
    with pytest.raises(ValueError, match=match) as info:
        cifar_fs(tmp_path, "val")
    assert str(tmp_path / "cifar-100-python" / "train") in str(info.value)


def test_fc100_checks_superclasses(tmp_path):
    def wrong(part, obj):
        fine = obj[b"fine_labels"]
        obj[b"coarse_labels"] = [(COARSE_OF[FINE[f]] + (FINE[f] == "bear")) % 20 for f in fine]

    _write_cifar(tmp_path, tweak=wrong)
    with pytest.raises(ValueError, match="class 'bear' have coarse labels"):
        fc100(tmp_path, "val")


def test_truncated_and_wrong_meta(tmp_path):
    _write_cifar(tmp_path)
    meta = tmp_path / "cifar-100-python" / "meta"
    raw = meta.read_bytes()
    meta.write_bytes(raw[: len(raw) - 30])
    with pytest.raises(ValueError, match="cannot be unpickled") as info:
        cifar_fs(tmp_path, "train")
    assert str(meta) in str(info.value)
    write_py2(meta, {b"fine_label_names": [f.encode() for f in FINE[:99]] + [b"zebra"],
                     b"coarse_label_names": [c.encode() for c, _ in COARSE]})
    with pytest.raises(ValueError, match="lacks the cifar_fs classes"):
        cifar_fs(tmp_path, "test")  # worm, the last name, is a test class
    write_py2(meta, {b"fine_label_names": [f.encode() for f in FINE[:50]]})
    with pytest.raises(ValueError, match="100 distinct names"):
        cifar_fs(tmp_path, "train")
