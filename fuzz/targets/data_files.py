"""Targets: the dataset readers of files: ``mr.data.idx``, ``image_folder`` and
``omniglot``, on small trees written by the case itself. Valid trees are checked against the
bytes written (IDX) or PIL's own decoding and box resize (images); damaged files, missing
paths and bad sizes must be refused naming the argument or the file."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Bool, Int, Path, Spec
from ..values import num

IDX_WRITER = '''import gzip
import struct


def write_idx(path, magic, dims, body, gz=False):
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + bytes(body)
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if gz else raw)
    return path'''

PNG_WRITER = '''from PIL import Image


def write_png(path, seed, w, h, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path'''


def decoded(path, size, mode):
    """An image file as ``image_folder``/``omniglot`` document it: converted to ``mode``,
    box-resized to ``size`` (channels first)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BOX)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


# ---------------------------------------------------------------- idx


def check_idx(result, args, meta):
    n, h, w = meta["dims"]
    body = np.frombuffer(bytes(meta["labels"]), np.uint8)
    assert isinstance(result, mr.data.ImageDataset), type(result)
    want = np.random.default_rng(meta["seed"]).integers(0, 256, n * h * w, dtype=np.uint8)
    assert np.array_equal(result.images, want.reshape(n, 1, h, w)), "images differ"
    values, remapped = np.unique(body, return_inverse=True)
    assert np.array_equal(result.labels, remapped.reshape(-1)), "labels differ"
    assert result.class_names == [str(int(v)) for v in values], result.class_names


@st.composite
def valid_idx(draw):
    n, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    labels = draw(st.lists(st.integers(0, 255), min_size=n, max_size=n))
    seed, gz = draw(st.integers(0, 99)), draw(st.booleans())
    draft = Draft(meta={"dims": [n, h, w], "labels": labels, "seed": seed})
    body = f"np.random.default_rng({seed}).integers(0, 256, {n * h * w}, dtype=np.uint8)"
    draft.setup += [IDX_WRITER,
                    f"write_idx(os.path.join(tmp, 'img'), 0x803, ({n}, {h}, {w}), "
                    f"{body}.tobytes(), gz={gz})",
                    f"write_idx(os.path.join(tmp, 'lab'), 0x801, ({n},), bytes({labels!r}), "
                    f"gz={gz})"]
    form = draw(st.sampled_from(["str", "path"]))
    for name, f in (("images_path", "img"), ("labels_path", "lab")):
        e = f"os.path.join(tmp, {f!r})"
        draft.val(name, f"__import__('pathlib').Path({e})" if form == "path" else e)
    return draft


def idx_breaks(draft):
    n, h, w = draft.meta["dims"]
    out = []
    for arg, f, magic, dims in (("images_path", "img", 0x803, (n, h, w)),
                                ("labels_path", "lab", 0x801, (n,))):
        size = int(np.prod(dims))
        path = f"os.path.join(tmp, {f!r})"
        for how, stmt in (
                ("wrong magic", f"write_idx({path}, {magic - 1}, {dims}, bytes({size}))"),
                ("body one byte short", f"write_idx({path}, {magic}, {dims}, bytes({size - 1}))"),
                ("one byte after the body", f"write_idx({path}, {magic}, {dims}, "
                                            f"bytes({size + 1}))"),
                ("truncated header", f"open({path}, 'wb').write(bytes([0, 0, 8]))"),
                ("huge header dims", f"write_idx({path}, {magic}, {(2**31,) + dims[1:]}, "
                                     f"bytes({size}))"),
                ("corrupt gzip", f"open({path}, 'wb').write(gzip.compress(bytes(64))[:20])")):
            out.append(Break(arg, draft.args[arg], how, (arg, "=value"), setup=(stmt,)))
        out.append(Break(arg, "tmp", "a directory", (arg, "=value")))
    out.append(Break("labels_path", draft.args["labels_path"], "one label more than images",
                     ("labels_path", "images_path", "count"),
                     setup=(f"write_idx(os.path.join(tmp, 'lab'), 0x801, ({n + 1},), "
                            f"bytes({n + 1}))",)))
    return out


# ---------------------------------------------------------------- image folders


@st.composite
def _tree(draw, draft, root):
    """Class folders of PNG files under ``root``; returns ``{class: [relative paths]}``."""
    names = draw(st.lists(st.sampled_from(["a", "b", "cat", "dog 2", "x_y", "Zeta"]),
                          min_size=1, max_size=3, unique=True))
    tree = {}
    draft.setup.append(PNG_WRITER)
    for c in names:
        files = []
        for i in range(draw(st.integers(1, 3))):
            sub = draw(st.sampled_from(["", "deeper/"]))
            rel = f"{c}/{sub}{i}.png"
            w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
            mode = draw(st.sampled_from(["L", "RGB"]))
            draft.setup.append(f"write_png(os.path.join({root}, {rel!r}), "
                               f"{draw(st.integers(0, 999))}, {w}, {h}, {mode!r})")
            files.append(rel)
        tree[c] = sorted(files, key=lambda r: (r.count("/"), r))
    return tree


def check_folder(result, args, meta):
    size = int(args["image_size"])
    mode = "L" if args["grayscale"] else "RGB"
    assert isinstance(result, mr.data.ImageDataset), type(result)
    groups = meta["groups"]
    classes = sorted(groups)
    assert result.class_names == classes, f"classes {result.class_names}"
    files = [f for c in classes for f in groups[c]]
    assert result.images.shape == (len(files), 1 if mode == "L" else 3, size, size), \
        result.images.shape
    for i, rel in enumerate(files):
        want = decoded(os.path.join(str(args["root"]), rel), size, mode)
        assert np.array_equal(result.images[i], want), f"image {i} ({rel}) differs"
    labels = np.repeat(np.arange(len(classes)), [len(groups[c]) for c in classes])
    assert np.array_equal(result.labels, labels), "labels"


def _walk_order(files):
    """``_images_below``'s order: files of a folder (sorted), then its sub-folders'."""
    return sorted(files, key=lambda r: (r.count("/"), r))


@st.composite
def valid_folder(draw):
    draft = Draft()
    draft.setup.append("root = os.path.join(tmp, 'root')")
    tree = draw(_tree(draft, "root"))
    draft.val("root", "root")
    size = draw(st.integers(1, 16))
    draft.val("image_size", num(size), value=size)
    draft.val("grayscale", repr(draw(st.booleans())))
    if draw(st.booleans()):
        rows = [(rel, draw(st.sampled_from(["p", "q"]))) for c in tree for rel in tree[c]]
        rows = list(draw(st.permutations(rows)))
        text = "filename,label\n" + "".join(f"{r},{lab}\n" for r, lab in rows)
        draft.setup.append(f"open(os.path.join(tmp, 'split.csv'), 'w').write({text!r})")
        draft.val("split_csv", "os.path.join(tmp, 'split.csv')")
        groups: dict[str, list[str]] = {}
        for rel, lab in rows:
            groups.setdefault(lab, []).append(rel)
    else:
        draft.val("split_csv", "None")
        groups = {c: _walk_order(f) for c, f in tree.items()}
    draft.val("progress", "False")
    draft.val("workers", repr(draw(st.none() | st.integers(1, 3))))
    draft.meta["groups"] = groups
    return draft


def folder_breaks(draft):
    out = [Break("root", "os.path.join(tmp, 'empty')", "no class folders", ("root", "=value"),
                 setup=("os.makedirs(os.path.join(tmp, 'empty'))",)),
           Break("root", "os.path.join(tmp, 'f.png')", "a file, not a folder",
                 ("root", "=value"), setup=("open(os.path.join(tmp, 'f.png'), 'w').close()",))]
    if draft.args["split_csv"] == "None":  # (a split file picks its images: folders aside)
        out.append(Break("root", "root", "a class folder without images", ("root", "=value"),
                         setup=("os.makedirs(os.path.join(root, 'nothing_here'))",)))
        out.append(Break("root", "root", "a corrupt PNG", ("root", "=value", "*bad.png"),
                         setup=("os.makedirs(os.path.join(root, 'a'), exist_ok=True)",
                                "open(os.path.join(root, 'a', 'bad.png'), 'wb')"
                                ".write(b'not a png')")))
    csv = "os.path.join(tmp, 'split.csv')"
    for how, text in (("a bad header", "file,label\nx.png,a\n"),
                      ("a missing file", "filename,label\nnope.png,a\n"),
                      ("no rows", "filename,label\n"),
                      ("a short row", "filename,label\nx.png\n")):
        out.append(Break("split_csv", csv, f"csv with {how}", ("split_csv", "=value"),
                         setup=(f"open({csv}, 'w').write({text!r})",)))
    return out


class MaybePath(Path):
    nullable = True


# ---------------------------------------------------------------- omniglot


@st.composite
def valid_omniglot(draw):
    draft = Draft()
    draft.setup += [PNG_WRITER, "root = os.path.join(tmp, 'omni')"]
    chars = {}
    for a in draw(st.lists(st.sampled_from(["Greek", "Latin", "Runic"]), min_size=1,
                           max_size=2, unique=True)):
        for k in range(1, draw(st.integers(1, 2)) + 1):
            key = f"{a}/character{k:02d}"
            chars[key] = []
            for i in range(draw(st.integers(1, 2))):
                rel = f"images_background/{key}/{k:02d}{i:02d}_{i + 1:02d}.png"
                side = draw(st.sampled_from([105, 20, 7]))
                draft.setup.append(f"write_png(os.path.join(root, {rel!r}), "
                                   f"{draw(st.integers(0, 999))}, {side}, {side}, 'L')")
                chars[key].append(rel)
    draft.val("root", "root")
    draft.val("split", "'background'")
    size = draw(st.integers(4, 28))
    draft.val("image_size", num(size), value=size)
    draft.val("rotations", repr(draw(st.booleans())))
    draft.val("progress", "False")
    draft.val("workers", repr(draw(st.none() | st.integers(1, 2))))
    draft.meta["chars"] = chars
    return draft


def check_omniglot(result, args, meta):
    from PIL import Image

    size, rot = int(args["image_size"]), bool(args["rotations"])
    assert isinstance(result, mr.data.ImageDataset), type(result)
    chars = meta["chars"]
    names, images = [], []
    for key in sorted(chars):
        for r in ((0, 90, 180, 270) if rot else (None,)):
            names.append(key if r is None else f"{key}/rot{r:03d}")
            for rel in sorted(chars[key]):
                with Image.open(os.path.join(str(args["root"]), rel)) as im:
                    im = im.convert("L").rotate(r or 0)
                    im = im.resize((size, size), Image.Resampling.BOX) \
                        if im.size != (size, size) else im
                    images.append(np.asarray(im, np.uint8)[None])
    assert result.class_names == names, f"classes {result.class_names}"
    assert np.array_equal(result.images, np.stack(images)), "images differ"


def omniglot_breaks(draft):
    split = "os.path.join(tmp, 'split.txt')"
    first = next(iter(draft.meta["chars"]))
    unknown, bad_rot = "Nowhere/character01\n", f"{first}/rot045\n"
    return [Break("split", "'evaluation'", "a set that is not there", ("split", "=value")),
            Break("split", "'no such set'", "an unknown set name", ("split", "=value")),
            Break("split", split, "a split file naming an unknown character",
                  ("split", "=value"),
                  setup=(f"open({split}, 'w').write({unknown!r})",)),
            Break("split", split, "a split file line with a bad rotation", ("split", "=value"),
                  setup=(f"open({split}, 'w').write({bad_rot!r})",)),
            Break("root", "root", "a character folder without images", ("root", "=value"),
                  setup=("os.makedirs(os.path.join(root, 'images_background', 'Greek', "
                         "'character99'))",)),
            Break("root", "root", "a corrupt PNG", ("root", "=value", "*bad.png"),
                  setup=(f"open(os.path.join(root, {next(iter(draft.meta['chars'].values()))[0]!r}"
                         f".replace('.png', 'bad.png')), 'wb').write(b'junk')",)),
            Break("root", "os.path.join(tmp, 'f.zip')", "a file that is no zip archive",
                  ("root", "=value"), setup=("open(os.path.join(tmp, 'f.zip'), 'w').write('x')",))]


class SetName(Spec):
    junk_skip = frozenset({"str"})


TARGETS = [
    Target(name="data.idx", call="mr.data.idx(images_path, labels_path)",
           params={"images_path": Path(), "labels_path": Path()}, valid=valid_idx(),
           check=check_idx, relational=idx_breaks, rejects=("FileNotFoundError",)),
    Target(name="data.image_folder",
           call=("mr.data.image_folder(root, image_size, grayscale, split_csv, progress, "
                 "workers)"),
           params={"root": Path(), "image_size": Int(1, 4096), "grayscale": Bool(strict=False),
                   "split_csv": MaybePath(), "progress": Bool(strict=False),
                   "workers": Int(1, nullable=True, huge="skip")},
           valid=valid_folder(), check=check_folder, relational=folder_breaks,
           rejects=("FileNotFoundError",)),
    Target(name="data.omniglot",
           call="mr.data.omniglot(root, split, image_size, rotations, progress, workers)",
           params={"root": Path(), "split": SetName(), "image_size": Int(1, 4096),
                   "rotations": Bool(), "progress": Bool(strict=False),
                   "workers": Int(1, nullable=True, huge="skip")},
           valid=valid_omniglot(), check=check_omniglot, relational=omniglot_breaks,
           rejects=("FileNotFoundError",)),
]
