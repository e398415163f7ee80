"""Glyph rendering speed: images per second for the embedded dataset.

Run as ``python benches/bench_glyphs.py [--classes 100] [--per-class 20] [--size 28]``.
Prints one line per image size with the best of ``--repeats`` runs and the thread count
(set ``RAYON_NUM_THREADS`` to change it).
"""

from __future__ import annotations

import argparse
import time

from metarobust import _core
from metarobust.data import glyphs


def images_per_second(num_classes: int, per_class: int, size: int, repeats: int) -> float:
    glyphs(num_classes=num_classes, per_class=per_class, image_size=size)  # warm-up
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        glyphs(num_classes=num_classes, per_class=per_class, image_size=size, seed=r)
        best = min(best, time.perf_counter() - t)
    return num_classes * per_class / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 84, 105])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    threads = _core.num_threads()
    for size in args.sizes:
        rate = images_per_second(args.classes, args.per_class, size, args.repeats)
        print(
            f"glyphs {args.classes} classes x {args.per_class} at {size}x{size}: "
            f"{rate:,.0f} images/s ({threads} threads)"
        )


if __name__ == "__main__":
    main()
