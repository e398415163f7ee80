"""The class-per-folder reader and its CSV split, on small trees written here."""

import numpy as np
import pytest
from PIL import Image

from metarobust.data import image_folder
from metarobust.data.image_folder import decode_images


def pattern(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode)


def expected(path, size, mode):
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode).resize((size, size), Image.BOX))
    return arr if mode == "L" else arr.transpose(2, 0, 1)


@pytest.fixture
def tree(tmp_path):
    """zebra/ (2 PNGs, one nested) and ant/ (JPEG + grayscale PNG), mixed sizes, plus noise."""
    root = tmp_path / "root"
    (root / "zebra" / "more").mkdir(parents=True)
    (root / "ant").mkdir()
    (root / ".hidden").mkdir()
    pattern(30, 20, 1).save(root / "zebra" / "b.png")
    pattern(12, 40, 2).save(root / "zebra" / "more" / "a.PNG")
    pattern(25, 25, 3).save(root / "ant" / "x.jpg", quality=95)
    pattern(9, 9, 4, "L").save(root / "ant" / "y.png")
    (root / "ant" / "notes.txt").write_text("not an image")
    pattern(5, 5, 5).save(root / ".hidden" / "z.png")
    return root


def test_rgb_tree(tree):
    ds = image_folder(tree, image_size=8, progress=False)
    assert ds.class_names == ["ant", "zebra"]
    assert ds.images.shape == (4, 3, 8, 8) and ds.images.flags.c_contiguous
    assert ds.labels.tolist() == [0, 0, 1, 1]
    files = [
        tree / "ant/x.jpg",
        tree / "ant/y.png",
        tree / "zebra/b.png",
        tree / "zebra/more/a.PNG",
    ]  # os.walk: files of a folder, then its sub-folders
    for img, f in zip(ds.images, files, strict=True):
        np.testing.assert_array_equal(img, expected(f, 8, "RGB"))
    assert ds.metadata == {
        "source": "image_folder",
        "root": str(tree),
        "split": None,
        "image_size": 8,
        "grayscale": False,
    }


def test_grayscale_and_threads_agree(tree):
    one = image_folder(tree, image_size=6, grayscale=True, progress=False, workers=1)
    many = image_folder(tree, image_size=6, grayscale=True, progress=False, workers=3)
    assert one.images.shape == (4, 1, 6, 6)
    np.testing.assert_array_equal(one.images, many.images)
    np.testing.assert_array_equal(one.images[1, 0], expected(tree / "ant/y.png", 6, "L"))


def test_csv_split(tree, tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("filename,label\nb.png,n02\na.PNG,n02\nant/y.png,n01\n")
    ds = image_folder(tree, image_size=5, split_csv=csv, progress=False)
    assert ds.class_names == ["n01", "n02"]
    assert ds.labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(ds.images[0], expected(tree / "ant/y.png", 5, "RGB"))
    np.testing.assert_array_equal(ds.images[2], expected(tree / "zebra/more/a.PNG", 5, "RGB"))
    assert ds.metadata["split"] == str(csv)


@pytest.mark.parametrize(
    "text, match",
    [
        ("file,class\nb.png,x\n", "first line must be 'filename,label'"),
        ("", "first line"),
        ("filename,label\n", "lists no images"),
        ("filename,label\nb.png\n", "line 2: expected filename,label"),
        ("filename,label\nb.png,x\nb.png,y\n", "line 3: 'b.png' already listed on line 2"),
        (
            "filename,label\nb.png,x\nmissing1.png,x\nmissing2.jpg,y\n",
            "2 file.*missing1.png, missing2.jpg",
        ),
    ],
)
def test_bad_csv(tree, tmp_path, text, match):
    csv = tmp_path / "split.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=match):
        image_folder(tree, image_size=4, split_csv=csv, progress=False)


def test_csv_ambiguous_name(tree, tmp_path):
    pattern(4, 4, 9).save(tree / "ant" / "b.png")
    csv = tmp_path / "s.csv"
    csv.write_text("filename,label\nb.png,x\n")
    with pytest.raises(ValueError, match=r"b\.png \(2 files\)"):
        image_folder(tree, image_size=4, split_csv=csv, progress=False)
    csv.write_text("filename,label\nzebra/b.png,x\n")  # a relative path resolves it
    assert len(image_folder(tree, image_size=4, split_csv=csv, progress=False)) == 1


def test_missing_csv(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="split_csv"):
        image_folder(tree, split_csv=tmp_path / "none.csv", progress=False)


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="root .*nothing"):
        image_folder(tmp_path / "nothing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        image_folder(tmp_path / "empty", progress=False)
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        image_folder(tmp_path / "f.png", progress=False)


def test_class_folder_without_images(tree):
    (tree / "cat").mkdir()
    (tree / "cat" / "readme.md").write_text("#")
    with pytest.raises(ValueError, match=r"class folder .*cat holds no images"):
        image_folder(tree, image_size=4, progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_is_named(tree, workers):
    (tree / "zebra" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"cannot decode image .*zebra/broken\.png"):
        image_folder(tree, image_size=4, progress=False, workers=workers)


def test_truncated_image_is_named(tree):
    data = (tree / "zebra" / "b.png").read_bytes()
    (tree / "zebra" / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"zebra/b\.png"):
        image_folder(tree, image_size=4, progress=False)


@pytest.mark.parametrize("size, error", [(0, ValueError), (True, TypeError), (2.0, TypeError)])
def test_bad_image_size(tree, size, error):
    with pytest.raises(error, match="image_size"):
        image_folder(tree, image_size=size, progress=False)


def test_decode_images_from_bytes_with_many_chunks():
    import io

    items = []
    for i in range(600):  # more than one chunk of work per thread
        buf = io.BytesIO()
        Image.new("L", (7, 7), i % 256).save(buf, "PNG")
        items.append((f"img{i}", buf.getvalue()))
    out = decode_images(items, 3, "L", progress=False, workers=2)
    assert out.shape == (600, 3, 3)
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(600) % 256)


def test_arguments_are_checked_and_named(tree):
    cases = [
        (dict(root=None), TypeError, "^root: expected a path"),
        (dict(split_csv=5), TypeError, "^split_csv: expected a path"),
        (dict(grayscale=None), TypeError, "^grayscale: expected a bool"),
        (dict(progress="no"), TypeError, "^progress: expected a bool"),
        (dict(workers=2.5), TypeError, "^workers: expected an int, got 2.5"),  # was int(2.5)
        (dict(workers=0), ValueError, "^workers: must be >= 1"),
    ]
    for kwargs, error, words in cases:
        args = dict(root=tree, image_size=8, progress=False) | kwargs
        with pytest.raises(error, match=words):
            image_folder(**args)


def test_decoded_size_beyond_memory_is_named():
    # checked before the output array is allocated (a MemoryError) or anything decoded
    with pytest.raises(ValueError, match="^image_size: 1048576 decoded images of 4096x4096"):
        decode_images([("x.png", None)] * 2**20, 4096, "RGB", progress=False)
