"""Where every random number comes from: one seed, independent streams.

A training run, an evaluation or a robustness suite takes one integer ``seed`` (0 <= seed <
2**64). Each consumer draws from a stream of its own, named by a tag below and indexed by
position (episode, step, item), so that results are pure functions of the seed and the
position (whatever the batch split, thread count or resume point) and changing one consumer
(e.g. the attack) never moves the randomness of another (e.g. the episodes).

=======================  ==============================================  =====================
consumer                 stream                                          generator
=======================  ==============================================  =====================
episodes (sampler)       key ``seed``, stream ``episode index``          ChaCha8 (Rust core)
corruptions              key ``seed``, stream ``episode``, item mixed in  ChaCha8 (Rust core)
                         (the sampler's and ``corrupt(..., seed, index)``)
glyph datasets           key ``(seed, class, tag)``, stream ``instance``  ChaCha8 (Rust core)
sinusoid tasks           ``Philox(key=seed, counter=[0, task, 0, 0])``   NumPy Philox
model initialisation     ``torch.manual_seed(seed)``                     torch's global one
validation episodes      sampler seed ``derive(seed, VALIDATION)``       as episodes
training attacks (AQ)    ``derive(seed, ADVERSARIAL_TRAINING, step)``    torch (PGD start)
augmentation choices     ``(seed, AUGMENT, episode)``                    NumPy PCG64
label noise              ``(seed, LABEL_NOISE, kind, episode)``          NumPy PCG64
suite Gaussian noise     ``derive(seed, GAUSSIAN_NOISE, part, episode)``  torch CPU
suite PGD random starts   ``derive(seed, PGD_START, first episode)``      torch (PGD start)
certification noise      ``(seed, CERTIFY, episode)``                    torch CPU
noise training           ``derive(seed, NOISE_TRAINING, step)``          torch (its device)
pre-training batches     ``(seed, PRETRAIN, epoch)`` (a permutation)     NumPy PCG64
=======================  ==============================================  =====================

Evaluations (``metarobust eval --seed``, the robustness suite's ``seed``) use their seed as
the sampler seed directly: the same seed gives the same test episodes in every command.
``(seed, TAG, *parts)`` streams go through NumPy's ``SeedSequence``, which hashes the whole
tuple: nearby seeds or positions give unrelated streams.

>>> derive(0, VALIDATION) == derive(0, VALIDATION) != derive(1, VALIDATION)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ADVERSARIAL_TRAINING", "AUGMENT", "CERTIFY", "GAUSSIAN_NOISE", "LABEL_NOISE", "MAX_SEED",
    "NOISE_TRAINING", "PGD_START", "PRETRAIN", "VALIDATION", "derive", "numpy_rng",
    "torch_generator",
]

MAX_SEED = 2**64 - 1

# Stream tags: two ASCII letters each, fixed forever (changing one changes results).
VALIDATION = 0x5641            # "VA"
ADVERSARIAL_TRAINING = 0x4151  # "AQ"
AUGMENT = 0x4147               # "AG"
LABEL_NOISE = 0x4C4E           # "LN"
GAUSSIAN_NOISE = 0x474E        # "GN"
PGD_START = 0x5047             # "PG"
CERTIFY = 0x4352               # "CR"
NOISE_TRAINING = 0x4E54        # "NT"
PRETRAIN = 0x5054              # "PT"


def _entropy(seed: int, stream: int, parts: tuple[int, ...]) -> list[int]:
    values = [seed, stream, *parts]
    names = ["seed", "stream", *(f"parts[{k}]" for k in range(len(parts)))]
    for v, name in zip(values, names):
        if (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0
                or v > MAX_SEED):
            raise ValueError(f"{name}: seed streams take non-negative ints below 2**64, got "
                             f"{v!r} ({type(v).__name__})")
    return [int(v) for v in values]


def derive(seed: int, stream: int, *parts: int) -> int:
    """A 64-bit seed for ``stream`` at position ``parts`` (e.g. a step or an episode)."""
    entropy = _entropy(seed, stream, parts)
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def numpy_rng(seed: int, stream: int, *parts: int) -> np.random.Generator:
    """A NumPy generator (PCG64) for ``stream`` at position ``parts``."""
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(_entropy(seed, stream, parts))))


def torch_generator(seed: int, stream: int, *parts: int, device: Any = "cpu") -> Any:
    """A ``torch.Generator`` on ``device`` for ``stream`` at position ``parts``."""
    import torch

    return torch.Generator(device=device).manual_seed(derive(seed, stream, *parts))
