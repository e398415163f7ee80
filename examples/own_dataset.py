"""Your own dataset: a folder of images, and a torch Dataset.

    python examples/own_dataset.py [--root FOLDER] [--out runs/own-data]

A folder of images holds one sub-folder per class (`FOLDER/<class>/<image>.png`); without
--root, a small one is drawn first. Any map-style torch Dataset of (image, label) pairs
works too. Both become an ImageDataset (uint8 N x C x H x W), which is cached, sampled and
trained on like any other.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import metarobust as mr


def draw_folder(root: Path, classes: int = 10, per_class: int = 6, size: int = 32) -> Path:
    """A folder of PNGs, one sub-folder per class: a bright square at a class position."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            y, x = divmod(c, 4)
            img[4 + 6 * y:10 + 6 * y, 4 + 6 * x:10 + 6 * x] = 255
            Image.fromarray(img).save(root / f"class_{c:02d}" / f"{i}.png")
    return root


class Squares(torch.utils.data.Dataset):
    """A torch Dataset of (CHW float tensor in [0, 1], label) pairs."""

    def __init__(self, classes: int = 10, per_class: int = 6) -> None:
        self.classes, self.per_class = classes, per_class

    def __len__(self) -> int:
        return self.classes * self.per_class

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        label = i // self.per_class
        img = torch.zeros(1, 28, 28)
        img[0, 2 * label:2 * label + 6, 4 + i % self.per_class:12] = 1.0
        return img, label


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", help="a folder of class sub-folders (default: draw one)")
    p.add_argument("--steps", type=int, default=50, help="training steps on the folder")
    p.add_argument("--out", default="runs/own-data", help="where the cache and run go")
    args = p.parse_args(argv)
    out = Path(args.out)

    # 1. A folder of images: read once (parallel decoding), saved as a memory-mapped cache
    root = Path(args.root) if args.root else draw_folder(Path(tempfile.mkdtemp()) / "images")
    folder = mr.data.image_folder(root, image_size=32, progress=False)
    folder.save(out / "cache")
    folder = mr.data.load(out / "cache")
    print(f"folder: {folder.images.shape} images, {folder.num_classes} classes")

    # 2. A torch Dataset: read into an ImageDataset the same way
    tds = mr.data.from_torch(Squares(), progress=False)
    print(f"torch Dataset: {tds.images.shape} images, {tds.num_classes} classes")

    # Either trains like any dataset: here the Trainer on the folder's images
    from metarobust.config import TrainConfig
    from metarobust.train import Trainer

    cfg = TrainConfig(learner="protonet", model="conv4_mini", ways=5, shots=1, queries=3,
                      steps=args.steps, image_size=32)
    result = Trainer(cfg, out / "run", dataset=folder).fit()
    print("trained:", result)


if __name__ == "__main__":
    main()
