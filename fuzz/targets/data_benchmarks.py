"""Targets: the readers of the few-shot benchmarks' own files, ``mr.data.cub``,
``mini_imagenet`` (its cache pickle), ``tiered_imagenet``, ``cifar_fs`` and ``fc100``, on
tiny copies written by the case itself. Valid copies are checked against PIL's decoding and
box resize; damaged index files, pickles that are truncated or say inconsistent things, and
missing files must be refused naming the argument or the file."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Bool, Choice, Int, Path
from ..values import num

SPLITS = ("train", "val", "test")


def _box_resize(im, size):
    from PIL import Image

    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im, np.uint8).transpose(2, 0, 1)


# ---------------------------------------------------------------- cub

CUB_WRITER = '''from PIL import Image


def write_cub(folder, classes, images, boxes):
    """classes: names; images: (class index, seed, w, h, ext); boxes: (x, y, w, h)."""
    lines_i, lines_l, lines_b = [], [], []
    for k, (c, seed, w, h, ext) in enumerate(images, 1):
        rel = f"{classes[c]}/img_{k}.{ext}"
        os.makedirs(os.path.join(folder, "images", classes[c]), exist_ok=True)
        px = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(px).save(os.path.join(folder, "images", rel))
        lines_i.append(f"{k} {rel}")
        lines_l.append(f"{k} {c + 1}")
        lines_b.append(f"{k} " + " ".join(map(str, boxes[k - 1])))
    for name, lines in (("classes.txt", [f"{i + 1} {n}" for i, n in enumerate(classes)]),
                        ("images.txt", lines_i), ("image_class_labels.txt", lines_l),
                        ("bounding_boxes.txt", lines_b)):
        with open(os.path.join(folder, name), "w") as f:
            f.write("\\n".join(lines) + "\\n")'''


@st.composite
def valid_cub(draw):
    n_classes = draw(st.integers(4, 6))
    classes = [f"{i + 1:03d}.Bird_{i + 1}" for i in range(n_classes)]
    images, boxes = [], []
    for c in range(n_classes):
        for _ in range(draw(st.integers(1, 2))):
            w, h = draw(st.integers(2, 14)), draw(st.integers(2, 14))
            images.append((c, draw(st.integers(0, 999)), w, h,
                           draw(st.sampled_from(["png", "jpg"]))))
            x, y = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
            boxes.append((x + draw(st.sampled_from([0.0, 0.5])), float(y),
                          float(draw(st.integers(1, w))), draw(st.sampled_from([1.0, 2.5]))))
    draft = Draft(meta={"classes": classes, "images": images, "boxes": boxes})
    draft.setup += [CUB_WRITER, "root = os.path.join(tmp, 'CUB_200_2011')",
                    f"write_cub(root, {classes!r}, {images!r}, {boxes!r})"]
    draft.val("root", draw(st.sampled_from(["root", "tmp"])))
    draft.val("split", repr(draw(st.sampled_from(SPLITS))))
    size = draw(st.integers(1, 12))
    draft.val("image_size", num(size), value=size)
    draft.val("crop", repr(draw(st.booleans())))
    draft.val("progress", "False")
    draft.val("workers", repr(draw(st.none() | st.integers(1, 3))))
    return draft


def check_cub(result, args, meta):
    from PIL import Image

    size, split, crop = int(args["image_size"]), str(args["split"]), bool(args["crop"])
    assert isinstance(result, mr.data.ImageDataset), type(result)
    root = str(args["root"])
    folder = root if os.path.exists(os.path.join(root, "images.txt")) else os.path.join(
        root, "CUB_200_2011")
    want = {"train": (0, 2), "val": (1,), "test": (3,)}[split]
    chosen = [k for k in range(len(meta["classes"])) if k % 4 in want]
    assert result.class_names == [meta["classes"][k] for k in chosen], result.class_names
    rows, labels = [], []
    for label, k in enumerate(chosen):
        for i, (c, _, _, _, ext) in enumerate(meta["images"]):
            if c != k:
                continue
            path = os.path.join(folder, "images", meta["classes"][c], f"img_{i + 1}.{ext}")
            with Image.open(path) as im:
                im = im.convert("RGB")
                if crop:
                    x, y, w, h = meta["boxes"][i]
                    im = im.crop((math.floor(x), math.floor(y), min(im.width, math.ceil(x + w)),
                                  min(im.height, math.ceil(y + h))))
                rows.append(_box_resize(im, size))
            labels.append(label)
    assert np.array_equal(result.images, np.stack(rows)), "images differ"
    assert result.labels.tolist() == labels, "labels differ"


def cub_breaks(draft):
    f = "os.path.join(tmp, 'CUB_200_2011', {!r})"
    out_of_range = (f"p = {f.format('image_class_labels.txt')}; s = open(p).read().split('\\n')"
                    "; s[0] = s[0].split()[0] + ' 77'; open(p, 'w').write('\\n'.join(s))")
    out = []
    for how, name, stmt in (
            ("a class id listed twice", "classes.txt",
             f"open({f.format('classes.txt')}, 'w').write('1 a\\n1 b\\n')"),
            ("an empty index", "images.txt", f"open({f.format('images.txt')}, 'w').close()"),
            ("a short line", "image_class_labels.txt",
             f"open({f.format('image_class_labels.txt')}, 'w').write('1\\n')"),
            ("a class id out of range", "image_class_labels.txt", out_of_range),
            ("ids that disagree", "image_class_labels.txt",
             f"open({f.format('image_class_labels.txt')}, 'w').write('1 1\\n')")):
        out.append(Break("root", draft.args["root"], how, ("root", "=value", f"*{name}"),
                         setup=(stmt,)))
    split = draft.args["split"].strip("'")
    want = {"train": (0, 2), "val": (1,), "test": (3,)}[split]
    k, (c, _, _, _, ext) = next((k, im) for k, im in enumerate(draft.meta["images"], 1)
                                if im[0] % 4 in want)
    img = (f"os.path.join(tmp, 'CUB_200_2011', 'images', {draft.meta['classes'][c]!r}, "
           f"'img_{k}.{ext}')")
    for how, stmt in (("a truncated image", f"open({img}, 'r+b').truncate(20)"),
                      ("a missing image", f"os.remove({img})")):
        out.append(Break("root", draft.args["root"], how, ("root", "=value", f"*img_{k}."),
                         setup=(stmt,)))
    out.append(Break("root", "os.path.join(tmp, 'CUB_200_2011', 'images')", "no index files",
                     ("root", "=value", "*images.txt")))
    return out


# ---------------------------------------------------------------- mini_imagenet cache pickle


@st.composite
def valid_mini(draw):
    n_classes = draw(st.integers(1, 4))
    counts = [draw(st.integers(1, 3)) for _ in range(n_classes)]
    n = sum(counts)
    perm = draw(st.permutations(list(range(n))))
    wnids = [f"n0{draw(st.integers(1000000, 9999999))}" for _ in range(n_classes)]
    wnids = list(dict.fromkeys(wnids))
    counts = counts[: len(wnids)]
    n = sum(counts)
    perm = [p for p in perm if p < n]
    starts = np.cumsum([0] + counts).tolist()
    class_dict = {w: perm[starts[k]: starts[k + 1]] for k, w in enumerate(wnids)}
    side, seed = draw(st.integers(1, 12)), draw(st.integers(0, 999))
    split = draw(st.sampled_from(SPLITS))
    draft = Draft(meta={"class_dict": class_dict, "side": side, "seed": seed})
    draft.setup += [
        "import pickle",
        f"px = np.random.default_rng({seed}).integers(0, 256, ({n}, {side}, {side}, 3), "
        "dtype=np.uint8)",
        f"path = os.path.join(tmp, 'mini-imagenet-cache-{split}.pkl')",
        f"open(path, 'wb').write(pickle.dumps({{'image_data': px, 'class_dict': {class_dict!r}}},"
        f" protocol={draw(st.sampled_from([2, 4]))}))"]
    draft.val("root", "tmp")
    draft.val("split", repr(split))
    size = draw(st.integers(1, 12))
    draft.val("image_size", num(size), value=size)
    return draft


def check_mini(result, args, meta):
    from PIL import Image

    assert isinstance(result, mr.data.ImageDataset), type(result)
    size, side = int(args["image_size"]), meta["side"]
    n = sum(len(v) for v in meta["class_dict"].values())
    px = np.random.default_rng(meta["seed"]).integers(0, 256, (n, side, side, 3),
                                                      dtype=np.uint8)
    names = sorted(meta["class_dict"])
    assert result.class_names == names, result.class_names
    order = [i for w in names for i in meta["class_dict"][w]]
    want = np.stack([_box_resize(Image.fromarray(px[i]), size) for i in order])
    assert np.array_equal(result.images, want), "images differ"
    assert result.labels.tolist() == [k for k, w in enumerate(names)
                                      for _ in meta["class_dict"][w]], "labels differ"


def mini_breaks(draft):
    out = []
    first = next(iter(draft.meta["class_dict"]))
    for how, stmt in (
            ("a truncated pickle", "open(path, 'r+b').truncate(os.path.getsize(path) // 2)"),
            ("a pickle of a list", "open(path, 'wb').write(pickle.dumps([px]))"),
            ("no class_dict", "open(path, 'wb').write(pickle.dumps({'image_data': px}))"),
            ("an index out of range",
             f"open(path, 'wb').write(pickle.dumps({{'image_data': px, 'class_dict': "
             f"{{{first!r}: [len(px)]}}}}))"),
            ("an image listed twice",
             f"open(path, 'wb').write(pickle.dumps({{'image_data': px, 'class_dict': "
             f"{{{first!r}: list(range(len(px))) + [0]}}}}))"),
            ("float images", "open(path, 'wb').write(pickle.dumps({'image_data': "
                             "px.astype(np.float32), 'class_dict': {}}))")):
        out.append(Break("root", "tmp", how, ("root", "=value", "*mini-imagenet-cache"),
                         setup=(stmt,)))
    out.append(Break("root", "tmp", "no split file", ("root", "=value", "*mini-imagenet-cache"),
                     setup=("os.remove(path)",)))
    return out


# ---------------------------------------------------------------- tiered_imagenet


def _png(seed, side):
    from PIL import Image

    buf = io.BytesIO()
    px = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(px).save(buf, "PNG")
    return buf.getvalue()


@st.composite
def valid_tiered(draw):
    n_classes = draw(st.integers(1, 3))
    specific = draw(st.permutations([c for c in range(n_classes)
                                     for _ in range(draw(st.integers(1, 2)))]))
    general_of = [draw(st.integers(0, 1)) for _ in range(n_classes)]
    seeds = [draw(st.integers(0, 999)) for _ in specific]
    side = draw(st.integers(1, 10))
    split = draw(st.sampled_from(SPLITS))
    labels = {"label_specific": list(specific), "label_general": [general_of[s] for s in specific],
              "label_specific_str": [f"n0{1000000 + c}" for c in range(n_classes)],
              "label_general_str": ["cat_a", "cat_b"]}
    draft = Draft(meta={"labels": labels, "seeds": seeds, "side": side})
    draft.setup += [
        "import io, pickle",
        "from PIL import Image",
        "def png(seed, side):\n    buf = io.BytesIO()\n    px = np.random.default_rng(seed)"
        ".integers(0, 256, (side, side, 3), dtype=np.uint8)\n    Image.fromarray(px)"
        ".save(buf, 'PNG')\n    return np.frombuffer(buf.getvalue(), np.uint8)",
        f"imgs = os.path.join(tmp, '{split}_images_png.pkl')",
        f"labs = os.path.join(tmp, '{split}_labels.pkl')",
        f"open(imgs, 'wb').write(pickle.dumps([png(s, {side}) for s in {seeds!r}], protocol=2))",
        f"open(labs, 'wb').write(pickle.dumps({labels!r}, protocol=2))"]
    draft.val("root", "tmp")
    draft.val("split", repr(split))
    size = draw(st.integers(1, 12))
    draft.val("image_size", num(size), value=size)
    draft.val("progress", "False")
    draft.val("workers", repr(draw(st.none() | st.integers(1, 2))))
    return draft


def check_tiered(result, args, meta):
    from PIL import Image

    assert isinstance(result, mr.data.ImageDataset), type(result)
    size, labels = int(args["image_size"]), meta["labels"]
    specific = labels["label_specific"]
    assert result.class_names == labels["label_specific_str"], result.class_names
    order = sorted(range(len(specific)), key=lambda i: specific[i])
    rows = []
    for i in order:
        with Image.open(io.BytesIO(_png(meta["seeds"][i], meta["side"]))) as im:
            rows.append(_box_resize(im.convert("RGB"), size))
    assert np.array_equal(result.images, np.stack(rows)), "images differ"
    assert result.labels.tolist() == [specific[i] for i in order], "labels differ"
    general = dict(zip(specific, labels["label_general"]))
    assert result.metadata["class_general"] == [general[c] for c in range(len(general))]


def tiered_breaks(draft):
    n = len(draft.meta["labels"]["label_specific"])
    lab = dict(draft.meta["labels"])
    out_of_range = dict(lab, label_specific=[len(lab["label_specific_str"])] * n)
    shorter = dict(lab, label_general=lab["label_general"][:-1])
    out = []
    for how, stmt, name in (
            ("a truncated images pickle", "open(imgs, 'r+b').truncate(os.path.getsize(imgs) - 9)",
             "images_png"),
            ("a truncated labels pickle", "open(labs, 'r+b').truncate(os.path.getsize(labs) // 2)",
             "labels"),
            ("labels out of range", f"open(labs, 'wb').write(pickle.dumps({out_of_range!r}))",
             "labels"),
            ("label lists of two lengths", f"open(labs, 'wb').write(pickle.dumps({shorter!r}))",
             "labels"),
            ("one image fewer", f"open(imgs, 'wb').write(pickle.dumps([png(1, 2)] * {n - 1}))",
             "images_png"),
            ("an image that is no PNG", f"open(imgs, 'wb').write(pickle.dumps([b'x'] * {n}))",
             "images_png"),
            ("no labels file", "os.remove(labs)", "labels")):
        out.append(Break("root", "tmp", how, ("root", "=value", f"*{name}"), setup=(stmt,)))
    return out


# ---------------------------------------------------------------- cifar_fs, fc100

CIFAR_WRITER = '''import pickle
from metarobust.data._benchmark import shipped_classes

FC = [ln for s in ("train", "val", "test") for ln in shipped_classes("fc100", s)]
SUP = {ln.split("/")[1]: ln.split("/")[0] for ln in FC}
FINE = sorted(SUP)
COARSE = sorted(set(SUP.values()))


def cifar_part(seed, per_class):
    rng = np.random.default_rng(seed)
    fine = rng.permutation(np.repeat(np.arange(100), per_class)).tolist()
    data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
    return {b"data": data, b"fine_labels": fine,
            b"coarse_labels": [COARSE.index(SUP[FINE[f]]) for f in fine]}


def write_cifar(folder, parts):
    os.makedirs(folder, exist_ok=True)
    meta = {b"fine_label_names": [f.encode() for f in FINE],
            b"coarse_label_names": [c.encode() for c in COARSE]}
    for name, obj in [("meta", meta)] + list(parts.items()):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(pickle.dumps(obj, protocol=2))'''


@st.composite
def valid_cifar(draw):
    seeds = {p: draw(st.integers(0, 999)) for p in ("train", "test")}
    counts = {p: draw(st.integers(1, 2)) for p in ("train", "test")}
    draft = Draft(meta={"seeds": seeds, "counts": counts})
    draft.setup += [CIFAR_WRITER, "folder = os.path.join(tmp, 'cifar-100-python')",
                    "parts = {p: cifar_part(s, c) for p, s, c in "
                    f"(('train', {seeds['train']}, {counts['train']}), "
                    f"('test', {seeds['test']}, {counts['test']}))}}",
                    "write_cifar(folder, parts)"]
    draft.val("root", draw(st.sampled_from(["tmp", "folder"])))
    draft.val("split", repr(draw(st.sampled_from(SPLITS))))
    size = draw(st.integers(1, 40))
    draft.val("image_size", num(size), value=size)
    return draft


def _check_cifar(reader):
    def check(result, args, meta):
        from PIL import Image

        from metarobust.data._benchmark import shipped_classes

        assert isinstance(result, mr.data.ImageDataset), type(result)
        size = int(args["image_size"])
        names = [ln.rsplit("/", 1)[-1] for ln in shipped_classes(reader, str(args["split"]))]
        assert result.class_names == names, result.class_names
        fine_names = sorted(ln.split("/")[1] for s in SPLITS
                            for ln in shipped_classes("fc100", s))
        rows, labels = [], []
        for label, name in enumerate(names):
            for part in ("train", "test"):
                rng = np.random.default_rng(meta["seeds"][part])
                fine = rng.permutation(np.repeat(np.arange(100), meta["counts"][part]))
                data = rng.integers(0, 256, (fine.size, 3072), dtype=np.uint8)
                for row in data[fine == fine_names.index(name)]:
                    im = Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0))
                    rows.append(_box_resize(im, size))
                    labels.append(label)
        assert np.array_equal(result.images, np.stack(rows)), "images differ"
        assert result.labels.tolist() == labels, "labels differ"
    return check


def cifar_breaks(draft):
    out = []
    for how, stmt, name in (
            ("a truncated train file", "p = os.path.join(folder, 'train'); "
             "open(p, 'r+b').truncate(os.path.getsize(p) // 3)", "train"),
            ("no meta file", "os.remove(os.path.join(folder, 'meta'))", "meta"),
            ("one fine label fewer", "parts['test'][b'fine_labels'].pop(); "
             "write_cifar(folder, parts)", "test"),
            ("a fine label 100", "parts['train'][b'fine_labels'][0] = 100; "
             "write_cifar(folder, parts)", "train"),
            ("rows of 3071 pixels", "parts['test'][b'data'] = parts['test'][b'data'][:, 1:]; "
             "write_cifar(folder, parts)", "test"),
            ("no coarse labels", "del parts['train'][b'coarse_labels']; "
             "write_cifar(folder, parts)", "train")):
        out.append(Break("root", draft.args["root"], how, ("root", "=value", f"*{name}"),
                         setup=(stmt,)))
    return out


TARGETS = [
    Target(name="data.cub",
           call="mr.data.cub(root, split, image_size, crop, progress, workers)",
           params={"root": Path(), "split": Choice(options=SPLITS), "image_size": Int(1, 4096),
                   "crop": Bool(), "progress": Bool(strict=False),
                   "workers": Int(1, nullable=True, huge="skip")},
           valid=valid_cub(), check=check_cub, relational=cub_breaks,
           rejects=("FileNotFoundError",)),
    Target(name="data.mini_imagenet", call="mr.data.mini_imagenet(root, split, image_size)",
           params={"root": Path(), "split": Choice(options=SPLITS), "image_size": Int(1, 4096)},
           valid=valid_mini(), check=check_mini, relational=mini_breaks,
           rejects=("FileNotFoundError",)),
    Target(name="data.tiered_imagenet",
           call="mr.data.tiered_imagenet(root, split, image_size, progress, workers)",
           params={"root": Path(), "split": Choice(options=SPLITS), "image_size": Int(1, 4096),
                   "progress": Bool(strict=False),
                   "workers": Int(1, nullable=True, huge="skip")},
           valid=valid_tiered(), check=check_tiered, relational=tiered_breaks,
           rejects=("FileNotFoundError",)),
    Target(name="data.cifar_fs", call="mr.data.cifar_fs(root, split, image_size)",
           params={"root": Path(), "split": Choice(options=SPLITS), "image_size": Int(1, 4096)},
           valid=valid_cifar(), check=_check_cifar("cifar_fs"), relational=cifar_breaks,
           rejects=("FileNotFoundError",)),
    Target(name="data.fc100", call="mr.data.fc100(root, split, image_size)",
           params={"root": Path(), "split": Choice(options=SPLITS), "image_size": Int(1, 4096)},
           valid=valid_cifar(), check=_check_cifar("fc100"), relational=cifar_breaks,
           rejects=("FileNotFoundError",)),
]
