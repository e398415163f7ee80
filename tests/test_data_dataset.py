"""ImageDataset, its cache (save/load, atomic writes, corruption)."""

import json
import os

import numpy as np
import pytest

from metarobust.data import dataset as dsmod
from metarobust.data.dataset import ImageDataset, load


def make(n=12, classes=3, shape=(1, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n) % classes
    names = [f"class{i}" for i in range(classes)]
    return ImageDataset(images, labels, names, {"source": "test", "image_size": shape[-1]})


# ---------------------------------------------------------------- construction


def test_fields_and_properties():
    ds = make()
    assert ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (12,)
    assert ds.num_classes == 3 and len(ds) == 12 and ds.image_shape == (1, 5, 4)
    assert ds.class_counts().tolist() == [4, 4, 4]
    assert "images=12" in repr(ds)


def test_default_class_names_and_noncontiguous_copy():
    images = np.zeros((4, 2, 3, 3), np.uint8)[:, :, ::-1]
    ds = ImageDataset(images, np.array([1, 0, 1, 0], np.uint8))
    assert ds.class_names == ["0", "1"]
    assert ds.images.flags.c_contiguous and ds.labels.dtype == np.int64


@pytest.mark.parametrize(
    "images, labels, names, error, match",
    [
        (np.zeros((2, 1, 2, 2), np.float32), [0, 1], None, TypeError, "uint8"),
        ([[0]], [0], None, TypeError, "numpy uint8"),
        (np.zeros((2, 2, 2), np.uint8), [0, 1], None, ValueError, "4 dimensions"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0], None, ValueError, "disagree on N"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0.0, 1.0], None, TypeError, "integers"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, -1], None, ValueError, ">= 0"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 2], ["a", "b"], ValueError, "num_classes"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 1], ["a", "a"], ValueError, "unique"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 1], "ab", TypeError, "one string"),
    ],
)
def test_bad_construction(images, labels, names, error, match):
    with pytest.raises(error, match=match):
        ImageDataset(images, labels, names)


def test_subset_relabels_in_given_order():
    ds = make()
    sub = ds.subset(["class2", 0])
    assert sub.class_names == ["class2", "class0"]
    assert sub.num_classes == 2 and len(sub) == 8
    keep = np.isin(ds.labels, [2, 0])
    np.testing.assert_array_equal(sub.images, ds.images[keep])
    np.testing.assert_array_equal(sub.labels, np.where(ds.labels[keep] == 2, 0, 1))
    assert sub.metadata["source"] == "test" and sub.metadata["subset_of"] == ["class2", "class0"]


@pytest.mark.parametrize(
    "classes, error",
    [
        ([5], ValueError),
        (["nope"], ValueError),
        ([], ValueError),
        ([1, 1], ValueError),
        ("class1", TypeError),
        ([1.5], TypeError),
    ],
)
def test_subset_bad_classes(classes, error):
    with pytest.raises(error, match="classes"):
        make().subset(classes)


# ---------------------------------------------------------------- cache round trip


def test_round_trip_mmap(tmp_path):
    ds = make()
    ds.save(tmp_path / "c")
    assert sorted(os.listdir(tmp_path / "c")) == ["dataset.json", "images.npy", "labels.npy"]
    back = load(tmp_path / "c")
    assert isinstance(back.images, np.memmap) and not back.images.flags.writeable
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.class_names == ds.class_names and back.metadata == ds.metadata
    assert back.labels.dtype == np.int64 and back.images.flags.c_contiguous
    again = load(tmp_path / "c" / "dataset.json", mmap=False)
    assert not isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, ds.images)
    sidecar = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert sidecar["format"] == "metarobust-dataset" and sidecar["version"] == 1
    assert sidecar["arrays"]["images"]["shape"] == [12, 1, 5, 4]


def test_empty_dataset_round_trip(tmp_path):
    ds = ImageDataset(np.zeros((0, 1, 3, 3), np.uint8), np.zeros(0, np.int64), ["a"])
    ds.save(tmp_path / "e")
    back = load(tmp_path / "e")
    assert len(back) == 0 and back.class_names == ["a"]


def test_overwrite_replaces_and_leaves_no_temp(tmp_path):
    make(seed=1).save(tmp_path / "c")
    ds = make(seed=2)
    ds.save(tmp_path / "c")
    np.testing.assert_array_equal(load(tmp_path / "c").images, ds.images)
    assert os.listdir(tmp_path) == ["c"]


def test_overwrite_from_own_memory_map(tmp_path):
    make().save(tmp_path / "c")
    mapped = load(tmp_path / "c")
    sub = ImageDataset(mapped.images, mapped.labels, mapped.class_names)
    sub.save(tmp_path / "c")
    np.testing.assert_array_equal(load(tmp_path / "c").images, make().images)


def test_refuses_to_replace_other_things(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("keep me")
    for target in ("file", "dir"):
        with pytest.raises(ValueError, match="not"):
            make().save(tmp_path / target)
    assert (tmp_path / "dir" / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"]


def test_metadata_must_be_json(tmp_path):
    ds = make()
    ds.metadata["bad"] = object()
    with pytest.raises(TypeError, match="JSON"):
        ds.save(tmp_path / "c")
    assert os.listdir(tmp_path) == []


def test_failed_save_leaves_nothing_and_keeps_old(tmp_path, monkeypatch):
    old = make(seed=3)
    old.save(tmp_path / "c")
    real = np.lib.format.write_array
    calls = []

    def failing(f, arr, **kw):
        calls.append(1)
        if len(calls) == 2:  # images written, labels fail
            raise OSError("disk full (simulated)")
        return real(f, arr, **kw)

    monkeypatch.setattr(dsmod.np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        make(seed=4).save(tmp_path / "c")
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        make(seed=4).save(tmp_path / "new")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c"]
    np.testing.assert_array_equal(load(tmp_path / "c").images, old.images)


# ---------------------------------------------------------------- corruption


@pytest.fixture
def cache(tmp_path):
    make(n=40).save(tmp_path / "c")
    return tmp_path / "c"


def flip(path, offset_from_end):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40
    path.write_bytes(bytes(data))


def test_truncated_images(cache):
    f = cache / "images.npy"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"images\.npy.*truncated"):
        load(cache)


def test_truncated_header(cache):
    f = cache / "labels.npy"
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(ValueError, match=r"labels\.npy.*header"):
        load(cache)


def test_padded_file(cache):
    f = cache / "images.npy"
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"images\.npy.*longer"):
        load(cache)


@pytest.mark.parametrize("name", ["images.npy", "labels.npy"])
@pytest.mark.parametrize("mmap", [True, False])
def test_flipped_byte_is_checksum_mismatch(cache, name, mmap):
    flip(cache / name, 3)
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}.*checksum mismatch"):
        load(cache, mmap=mmap)
    if name == "images.npy":  # verification is what caught it
        assert len(load(cache, verify=False)) == 40


def test_wrong_version(cache):
    f = cache / "dataset.json"
    side = json.loads(f.read_text())
    side["version"] = 99
    f.write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"dataset\.json.*version 99"):
        load(cache)


def test_wrong_format_name(cache):
    f = cache / "dataset.json"
    side = json.loads(f.read_text())
    side["format"] = "something-else"
    f.write_text(json.dumps(side))
    with pytest.raises(ValueError, match="format"):
        load(cache)


def test_sidecar_shape_disagrees_with_header(cache):
    f = cache / "dataset.json"
    side = json.loads(f.read_text())
    side["arrays"]["labels"]["shape"] = [39]
    f.write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"labels\.npy.*header"):
        load(cache)


def test_missing_sidecar(cache):
    (cache / "dataset.json").unlink()
    with pytest.raises(ValueError, match=r"dataset\.json is missing"):
        load(cache)


def test_truncated_sidecar(cache):
    f = cache / "dataset.json"
    f.write_text(f.read_text()[:50])
    with pytest.raises(ValueError, match=r"dataset\.json.*JSON"):
        load(cache)


def test_missing_array_file(cache):
    (cache / "images.npy").unlink()
    with pytest.raises(ValueError, match=r"images\.npy is missing"):
        load(cache)


def test_missing_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nothing")


@pytest.mark.parametrize("names", [True, 5, object()])
def test_class_names_that_are_no_sequence_are_named(names):
    # used to be "'bool' object is not iterable"
    ds = make()
    with pytest.raises(TypeError, match="^class_names must be a sequence of strings"):
        ImageDataset(ds.images, ds.labels, names)


@pytest.mark.parametrize("classes", [None, 3, np.int64(3), np.array(3)])
def test_subset_classes_that_are_no_iterable_are_named(classes):
    with pytest.raises(TypeError, match="^classes must be an iterable"):
        make().subset(classes)


@pytest.mark.parametrize("path, error", [(None, TypeError), (3, TypeError), (b"x", TypeError),
                                         ("", ValueError)])
def test_paths_are_checked_and_named(path, error, tmp_path):
    # None used to be "expected str, bytes or os.PathLike object, not NoneType"
    with pytest.raises(error, match="^path: expected a path"):
        load(path)
    with pytest.raises(error, match="^path: expected a path"):
        make().save(path)


def test_load_flags_are_bools(tmp_path):
    make().save(tmp_path / "c")
    for flag in ("mmap", "verify"):
        with pytest.raises(TypeError, match=f"^{flag}: expected a bool"):
            load(tmp_path / "c", **{flag: None})
