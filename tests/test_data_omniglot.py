"""Omniglot from the real PNG tree, the official zips and the Vinyals split files
(METAROBUST_DATA), plus bad input on small trees written here."""

import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from metarobust.data import load, omniglot, omniglot_index

SIZE = 28


def rows(ds, name):
    return np.flatnonzero(ds.labels == ds.class_names.index(name))


@pytest.fixture(scope="module")
def background(data_root):
    return omniglot(data_root, "background", image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def evaluation(data_root):
    return omniglot(data_root / "omniglot-py", "evaluation", image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def small2_rotated(data_root):
    """The official small2 zip, passed as root, with rotations."""
    archive = data_root / "omniglot-official" / "images_background_small2.zip"
    return omniglot(archive, image_size=SIZE, rotations=True, progress=False)


# ---------------------------------------------------------------- the real data


def check_set(ds, classes, alphabets):
    assert ds.images.shape == (classes * 20, 1, SIZE, SIZE)
    assert ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    assert ds.num_classes == classes and (ds.class_counts() == 20).all()
    assert (np.diff(ds.labels) >= 0).all()  # grouped by class
    assert ds.class_names == sorted(ds.class_names)
    assert all(n.split("/")[1].startswith("character") for n in ds.class_names)
    assert len({n.split("/")[0] for n in ds.class_names}) == alphabets
    # dark ink on white: mostly 255, some exact 0s where strokes are thick
    assert ds.images.mean() > 200 and ds.images.max() == 255 and ds.images.min() == 0


def test_background(background):
    check_set(background, 964, 30)
    assert background.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert background.metadata["source"] == "omniglot"
    assert background.metadata["split"] == "background"
    assert background.metadata["image_size"] == SIZE and background.metadata["files"] == "png"


def test_evaluation(evaluation, background):
    check_set(evaluation, 659, 20)
    bg_alpha = {n.split("/")[0] for n in background.class_names}
    assert not bg_alpha & {n.split("/")[0] for n in evaluation.class_names}


def test_rotation_class_counts(data_root):
    for split, characters in (("background", 964), ("evaluation", 659)):
        index = omniglot_index(data_root, split, rotations=True)
        assert len(index) == 4 * characters
        assert [n.rsplit("/", 1)[1] for n in [c for c, _ in index[:4]]] == [
            "rot000",
            "rot090",
            "rot180",
            "rot270",
        ]
        assert all(len(files) == 20 for _, files in index)


@pytest.mark.parametrize(
    "path",
    [
        "images_background/Greek/character01/0394_01.png",
        "images_background/Tifinagh/character54/0963_05.png",
        "images_background/Braille/character01/0192_19.png",
        "images_evaluation/Tibetan/character14/1569_12.png",
        "images_evaluation/Malayalam/character05/1276_03.png",
    ],
)
def test_pixels_match_direct_pil_decode(data_root, background, evaluation, path):
    ds = background if "background" in path else evaluation
    _, alphabet, character, fname = path.split("/")
    drawing = int(fname[5:7])
    row = rows(ds, f"{alphabet}/{character}")[drawing - 1]
    with Image.open(data_root / "omniglot-py" / path) as im:
        want = np.asarray(im.convert("L").resize((SIZE, SIZE), Image.BOX))
    np.testing.assert_array_equal(ds.images[row, 0], want)


@pytest.mark.parametrize("name, first_id", [("background", 1), ("evaluation", 965)])
def test_every_image_matches_the_npz_arrays(data_root, background, evaluation, name, first_id):
    """Independent source: the npz arrays (True = white), resized the same way."""
    ds = background if name == "background" else evaluation
    npz = np.load(data_root / "omniglot-npz" / f"images_{name}.npz")["images"]
    index = omniglot_index(data_root, name)
    for label, (class_name, files) in enumerate(index):
        if label % 4 and label != len(index) - 1:
            continue  # every 4th character (and the last) keeps the test quick
        ids = {int(os.path.basename(f)[:4]) for f in files}
        assert len(ids) == 1, class_name
        char_row = ids.pop() - first_id
        got = ds.images[ds.labels == label, 0]
        for k, f in enumerate(files):
            drawing = int(os.path.basename(f)[5:7])
            pixels = np.where(npz[char_row, drawing - 1], 255, 0).astype(np.uint8)
            want = np.asarray(Image.fromarray(pixels).resize((SIZE, SIZE), Image.BOX))
            np.testing.assert_array_equal(got[k], want, err_msg=f)


def test_small1_zip_matches_png_tree(data_root, background):
    small = omniglot(data_root, "background_small1", image_size=SIZE, progress=False)
    assert small.num_classes == 136 and len(small) == 136 * 20
    assert small.metadata["files"] == "zip"
    assert {n.split("/")[0] for n in small.class_names} == {
        "Balinese",
        "Early_Aramaic",
        "Greek",
        "Korean",
        "Latin",
    }
    tree = background.subset(small.class_names)
    np.testing.assert_array_equal(small.images, tree.images)
    np.testing.assert_array_equal(small.labels, tree.labels)


def pil_pipeline(png, rot=0, size=SIZE):
    """Independent reference: decode, rotate counter-clockwise at full size, area-resize."""
    with Image.open(png) as im:
        return np.asarray(im.convert("L").rotate(rot).resize((size, size), Image.BOX))


def test_small2_zip_matches_png_tree_with_rotations(data_root, small2_rotated, background):
    ds = small2_rotated
    assert ds.num_classes == 4 * 156 and len(ds) == 4 * 156 * 20
    assert ds.metadata["files"] == "zip" and ds.metadata["rotations"] is True
    upright = [n for n in ds.class_names if n.endswith("/rot000")]
    plain = [n[: -len("/rot000")] for n in upright]
    np.testing.assert_array_equal(ds.subset(upright).images, background.subset(plain).images)
    folder = data_root / "omniglot-py" / "images_background"
    for name in ("Greek/character03", "Tagalog/character17"):
        pngs = sorted((folder / name).glob("*.png"))
        for rot in (90, 180, 270):
            got = ds.images[rows(ds, f"{name}/rot{rot:03d}"), 0]
            want = np.stack([pil_pipeline(p, rot) for p in pngs])
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {rot}")


def test_zip_root_split_must_match(data_root):
    archive = data_root / "omniglot-official" / "images_background_small2.zip"
    with pytest.raises(ValueError, match="background_small2"):
        omniglot(archive, "evaluation", progress=False)
    same = omniglot_index(archive, "background_small2")
    assert [c for c, _ in same] == [c for c, _ in omniglot_index(data_root, "background_small2")]


@pytest.mark.parametrize(
    "split, classes, characters", [("train", 4112, 1028), ("val", 688, 172), ("test", 1692, 423)]
)
def test_vinyals_split_class_counts(data_root, split, classes, characters):
    path = data_root / "omniglot-splits" / "vinyals" / f"{split}.txt"
    index = omniglot_index(data_root, path)
    assert len(index) == classes
    assert len({c.rsplit("/", 1)[0] for c, _ in index}) == characters
    assert all(len(files) == 20 for _, files in index)
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    assert [c for c, _ in index] == lines


def test_vinyals_lines_load_from_both_sets(data_root, background, evaluation, tmp_path):
    """A split file made of Vinyals lines (val: background, test: evaluation alphabets)."""
    vinyals = data_root / "omniglot-splits" / "vinyals"
    lines = []
    for name in ("val.txt", "test.txt"):
        lines += vinyals.joinpath(name).read_text().split()[::37][:12]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n")
    ds = omniglot(data_root, path, image_size=SIZE, progress=False)
    assert ds.class_names == lines and (ds.class_counts() == 20).all()
    assert ds.metadata["split"] == str(path)
    assert ds.metadata["sets"] == ["background", "evaluation"]
    sources = {n: background for n in background.class_names}
    sources.update({n: evaluation for n in evaluation.class_names})
    index = dict(omniglot_index(data_root, path))
    assert {r.rsplit("/", 1)[1] for r in lines} == {"rot000", "rot090", "rot180", "rot270"}
    for label, name in enumerate(ds.class_names):
        char, rot = name.rsplit("/", 1)
        got = ds.images[ds.labels == label]
        if rot == "rot000":
            src = sources[char]
            np.testing.assert_array_equal(got, src.images[rows(src, char)], err_msg=name)
        else:  # against PIL directly
            want = np.stack([pil_pipeline(p, int(rot[3:])) for p in index[name]])
            np.testing.assert_array_equal(got[:, 0], want, err_msg=name)


def test_cache_round_trip_of_real_data(background, tmp_path):
    background.save(tmp_path / "bg")
    back = load(tmp_path / "bg")
    np.testing.assert_array_equal(back.images, background.images)
    np.testing.assert_array_equal(back.labels, background.labels)
    assert back.class_names == background.class_names
    assert back.metadata == background.metadata


# ---------------------------------------------------------------- bad input, small trees


def glyph(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.random((105, 105)) > 0.1).save(path)


@pytest.fixture
def tiny(tmp_path):
    """images_background: A/character01..02 (3 drawings); images_evaluation: B/character01."""
    root = tmp_path / "omni"
    for seed, rel in enumerate(
        [
            "images_background/A/character01/0001_01.png",
            "images_background/A/character01/0001_02.png",
            "images_background/A/character01/0001_03.png",
            "images_background/A/character02/0002_01.png",
            "images_evaluation/B/character01/0003_01.png",
            "images_evaluation/B/character01/0003_02.png",
        ]
    ):
        glyph(root / rel, seed)
    return root


def test_tiny_tree_and_split_file(tiny, tmp_path):
    ds = omniglot(tiny, image_size=7, progress=False)
    assert ds.class_names == ["A/character01", "A/character02"]
    assert ds.labels.tolist() == [0, 0, 0, 1] and ds.images.shape == (4, 1, 7, 7)
    split = tmp_path / "split.txt"
    split.write_text("# mine\nB/character01/rot180\n\nA/character02\nA/character01/rot000\n")
    sp = omniglot(tiny, split, image_size=7, progress=False)
    assert sp.class_names == ["B/character01/rot180", "A/character02", "A/character01/rot000"]
    assert sp.labels.tolist() == [0, 0, 1, 2, 2, 2]
    np.testing.assert_array_equal(sp.images[3:], ds.images[:3])
    ev = omniglot(tiny, "evaluation", image_size=7, progress=False)
    # 105 / 7 = 15: whole 15x15 boxes, so resizing commutes with rotating exactly here
    np.testing.assert_array_equal(sp.images[:2], np.rot90(ev.images, 2, axes=(2, 3)))
    plain = tmp_path / "plain.txt"
    plain.write_text("A/character02\n")
    rot = omniglot(tiny, plain, image_size=7, rotations=True, progress=False)
    assert rot.class_names == [f"A/character02/rot{r:03d}" for r in (0, 90, 180, 270)]


def test_zip_with_bad_and_good_members(tiny, tmp_path):
    archive = tmp_path / "images_background.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((tiny / "images_background").rglob("*.png")):
            zf.write(p, p.relative_to(tiny).as_posix())
        zf.writestr("__MACOSX/images_background/A/._x.png", b"junk")
    from_zip = omniglot(archive, image_size=9, progress=False)
    from_tree = omniglot(tiny, image_size=9, progress=False)
    np.testing.assert_array_equal(from_zip.images, from_tree.images)
    assert from_zip.class_names == from_tree.class_names
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("images_background/A/character02/0002_02.png", b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"images_background/A/character02/0002_02\.png"):
        omniglot(archive, image_size=9, progress=False)


def test_missing_root_and_sets(tmp_path):
    with pytest.raises(FileNotFoundError, match="root .*nope"):
        omniglot(tmp_path / "nope", progress=False)
    with pytest.raises(FileNotFoundError, match=r"no set 'background'.*images_background\.zip"):
        omniglot(tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="neither a set name"):
        omniglot(tmp_path, "no/such/split.txt", progress=False)
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip archive"):
        omniglot(tmp_path / "x.zip", progress=False)


def test_empty_folders(tmp_path):
    (tmp_path / "images_background").mkdir()
    with pytest.raises(ValueError, match="images_background is empty"):
        omniglot(tmp_path, progress=False)
    (tmp_path / "images_background" / "A").mkdir()
    with pytest.raises(ValueError, match="alphabet folder .*A has no character folders"):
        omniglot(tmp_path, progress=False)
    (tmp_path / "images_background" / "A" / "character01").mkdir()
    (tmp_path / "images_background" / "A" / "character01" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="character folder .*character01 holds no .png"):
        omniglot(tmp_path, progress=False)


def test_corrupt_png_is_named(tiny):
    (tiny / "images_background/A/character02/0002_01.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot decode image .*A/character02/0002_01\.png"):
        omniglot(tiny, progress=False)


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("A/character01\nZ/character09\nA/character77/rot090\n", ValueError,
         "2 character.*A/character77, Z/character09"),
        ("A/character01/rot045\n", ValueError, "line 1.*rot000, rot090"),
        ("A\n", ValueError, "line 1.*not <Alphabet>/characterNN"),
        ("A/character01\nA/character01\n", ValueError, "line 2.*repeats line 1"),
        ("# nothing\n\n", ValueError, "lists no classes"),
    ],
)  # fmt: skip
def test_bad_split_files(tiny, tmp_path, text, error, match):
    split = tmp_path / "split.txt"
    split.write_text(text)
    with pytest.raises(error, match=match):
        omniglot(tiny, split, progress=False)


def test_rotations_with_rotated_split_file(tiny, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("A/character01/rot090\n")
    with pytest.raises(ValueError, match="rotations=True cannot be combined"):
        omniglot(tiny, split, rotations=True, progress=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"image_size": 0}, ValueError, "image_size"),
        ({"image_size": 28.0}, TypeError, "image_size"),
        ({"rotations": 1}, TypeError, "rotations"),
        ({"split": 3}, TypeError, "split"),
        ({"workers": 0}, ValueError, "workers"),
    ],
)
def test_bad_arguments(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        omniglot(tiny, **{"progress": False, **kwargs})


def test_arguments_are_checked_and_named(tmp_path):
    # root=None used to be "expected str, bytes or os.PathLike object, not NoneType"
    for fn in (omniglot, omniglot_index):
        with pytest.raises(TypeError, match="^root: expected a path"):
            fn(None)
    with pytest.raises(TypeError, match="^progress: expected a bool"):
        omniglot(tmp_path, progress=None)
    with pytest.raises(TypeError, match="^workers: expected an int, got 1.5"):
        omniglot(tmp_path, workers=1.5)
