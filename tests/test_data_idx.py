"""The MNIST-format IDX reader on small files written here."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metarobust.data import idx
from metarobust.data.idx import read_idx


def image_bytes(pixels, magic=0x803):
    n, h, w = pixels.shape
    return struct.pack(">IIII", magic, n, h, w) + pixels.astype(np.uint8).tobytes()


def label_bytes(labels, magic=0x801):
    return struct.pack(">II", magic, len(labels)) + bytes(labels)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 4, 3), dtype=np.uint8)
    labels = [5, 2, 5, 9, 2, 2, 9]
    img, lab = tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte"
    img.write_bytes(image_bytes(pixels))
    lab.write_bytes(label_bytes(labels))
    return img, lab, pixels, labels


def test_reads_plain_files(files):
    img, lab, pixels, labels = files
    ds = idx(img, lab)
    assert ds.images.shape == (7, 1, 4, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:, 0], pixels)
    assert ds.class_names == ["2", "5", "9"]
    assert ds.labels.dtype == np.int64
    assert [ds.class_names[i] for i in ds.labels] == [str(v) for v in labels]
    assert ds.metadata["source"] == "idx" and ds.metadata["image_size"] == [4, 3]


def test_gzip_detected_by_magic_not_name(files, tmp_path):
    img, lab, pixels, _ = files
    gz_img = tmp_path / "images.raw"  # no .gz suffix on purpose
    gz_img.write_bytes(gzip.compress(img.read_bytes()))
    gz_lab = tmp_path / "labels.gz"
    gz_lab.write_bytes(gzip.compress(lab.read_bytes()))
    ds = idx(gz_img, gz_lab)
    np.testing.assert_array_equal(ds.images[:, 0], pixels)
    np.testing.assert_array_equal(ds.labels, idx(img, lab).labels)


def test_wrong_magic(files, tmp_path):
    img, lab, pixels, labels = files
    with pytest.raises(ValueError, match=r"images_path .*0x00000801, expected 0x00000803"):
        idx(lab, lab)  # a labels file given as images
    bad = tmp_path / "bad-labels"
    bad.write_bytes(label_bytes(labels, magic=0x802))
    with pytest.raises(ValueError, match=r"labels_path .*bad-labels.*magic number 0x00000802"):
        idx(img, bad)
    signed = tmp_path / "int-images"
    signed.write_bytes(image_bytes(pixels, magic=0x0C03))
    with pytest.raises(ValueError, match="magic number 0x00000c03"):
        idx(signed, lab)


def test_truncated_body_and_header(files, tmp_path):
    img, lab, _, _ = files
    short = tmp_path / "short"
    short.write_bytes(img.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"short: truncated: header \(7, 4, 3\) needs 84 bytes"):
        idx(short, lab)
    head = tmp_path / "head"
    head.write_bytes(img.read_bytes()[:10])
    with pytest.raises(ValueError, match="truncated header"):
        idx(head, lab)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="too short"):
        idx(img, tiny)


def test_extra_bytes_are_not_ignored(files, tmp_path):
    img, lab, _, _ = files
    long = tmp_path / "long"
    long.write_bytes(lab.read_bytes() + b"\x01")
    with pytest.raises(ValueError, match="extra bytes"):
        idx(img, long)


def test_truncated_gzip(files, tmp_path):
    img, lab, _, _ = files
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(img.read_bytes())[:-12])
    with pytest.raises(ValueError, match=r"cut\.gz: corrupt or truncated gzip"):
        idx(cut, lab)


def test_count_mismatch(files, tmp_path):
    img, _, _, labels = files
    lab6 = tmp_path / "six"
    lab6.write_bytes(label_bytes(labels[:6]))
    with pytest.raises(ValueError, match="7 images.*6 labels"):
        idx(img, lab6)


def test_missing_and_directory(files, tmp_path):
    img, lab, _, _ = files
    with pytest.raises(FileNotFoundError, match="images_path"):
        idx(tmp_path / "nope", lab)
    with pytest.raises(ValueError, match="labels_path .* not a file"):
        idx(img, tmp_path)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 6),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    data=st.data(),
)
def test_round_trip_any_shape(tmp_path_factory, n, h, w, data):
    d = tmp_path_factory.mktemp("idx")
    pixels = np.frombuffer(
        data.draw(st.binary(min_size=n * h * w, max_size=n * h * w)), np.uint8
    ).reshape(n, h, w)
    labels = data.draw(st.lists(st.integers(0, 255), min_size=n, max_size=n))
    (d / "i").write_bytes(image_bytes(pixels))
    (d / "l").write_bytes(label_bytes(labels))
    ds = idx(d / "i", d / "l")
    np.testing.assert_array_equal(ds.images.reshape(n, h, w), pixels)
    assert ds.class_names == [str(v) for v in sorted(set(labels))]
    assert [int(ds.class_names[i]) for i in ds.labels] == labels
    np.testing.assert_array_equal(read_idx(d / "l", 0x801), np.array(labels, np.uint8))


@pytest.mark.parametrize("bad, error", [(None, TypeError), (7, TypeError), ("", ValueError)])
def test_paths_are_checked_and_named(files, bad, error):
    # None used to be "expected str, bytes or os.PathLike object, not NoneType", and a bad
    # labels_path was only noticed after reading the images
    img, lab, _, _ = files
    with pytest.raises(error, match="^images_path: expected a path"):
        idx(bad, lab)
    with pytest.raises(error, match="^labels_path: expected a path"):
        idx(img, bad)
    with pytest.raises(error, match="^path: expected a path"):
        read_idx(bad, 0x801)
    with pytest.raises(TypeError, match="^magic: expected an int"):
        read_idx(lab, "0x801")
