"""Types of the Rust extension `metarobust._core` (hand-written; tests/test_core_stub.py
checks that it matches the module)."""

from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str
GLYPH_SPLIT_OFFSETS: dict[str, int]
GLYPH_SPLIT_STRIDE: int
GLYPH_MIN_SIZE: int
GLYPH_MAX_SIZE: int
CORRUPTIONS: tuple[str, ...]

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def num_threads() -> int: ...
def _panic_for_tests(message: str, detached: bool = False) -> None:
    """For tests only, not part of the API: panics in Rust with ``message`` (with the GIL
    released when ``detached``), which must reach Python as a RuntimeError naming the
    function."""

class SamplerCore:
    def __new__(
        cls,
        images: npt.NDArray[np.uint8],
        labels: npt.NDArray[np.int64],
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        classes: npt.NDArray[np.int64] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        corruption: str | None = None,
        severity: int = 3,
        corrupt: str = "query",
        ink: str = "dark",
        cache_bytes: int = 268435456,
    ) -> SamplerCore: ...
    @property
    def ways(self) -> int: ...
    @property
    def shots(self) -> int: ...
    @property
    def queries(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def image_shape(self) -> tuple[int, int, int]: ...
    @property
    def class_ids(self) -> list[int]: ...
    def cache_built(self, dtype: str) -> bool: ...
    def fill(
        self,
        start: int,
        count: int,
        support_x: npt.NDArray[np.float32] | npt.NDArray[np.uint8],
        support_y: npt.NDArray[np.int64],
        query_x: npt.NDArray[np.float32] | npt.NDArray[np.uint8],
        query_y: npt.NDArray[np.int64],
        classes: npt.NDArray[np.int64],
    ) -> None: ...

class FeatureSamplerCore:
    def __new__(
        cls,
        features: npt.NDArray[np.float32],
        labels: npt.NDArray[np.int64],
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        classes: npt.NDArray[np.int64] | None = None,
    ) -> FeatureSamplerCore: ...
    @property
    def ways(self) -> int: ...
    @property
    def shots(self) -> int: ...
    @property
    def queries(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def feature_dim(self) -> int: ...
    @property
    def class_ids(self) -> list[int]: ...
    def fill(
        self,
        start: int,
        count: int,
        support_x: npt.NDArray[np.float32],
        support_y: npt.NDArray[np.int64],
        query_x: npt.NDArray[np.float32],
        query_y: npt.NDArray[np.int64],
        classes: npt.NDArray[np.int64],
    ) -> None: ...

def prototypes(
    emb: FloatArray,
    labels: npt.NDArray[np.int64],
    ways: int,
    method: str = "mean",
    trim: float = 0.2,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> FloatArray: ...
def mean_prototypes_backward(
    grad_output: FloatArray, labels: npt.NDArray[np.int64], support: int
) -> FloatArray: ...
def pairwise_distances(x: FloatArray, y: FloatArray, metric: str = "sqeuclidean") -> FloatArray: ...
def pairwise_distances_backward(
    x: FloatArray, y: FloatArray, grad_output: FloatArray, metric: str = "sqeuclidean"
) -> tuple[FloatArray, FloatArray]: ...
def proto_distances(
    support: FloatArray,
    labels: npt.NDArray[np.int64],
    query: FloatArray,
    ways: int,
    metric: str = "sqeuclidean",
) -> tuple[FloatArray, FloatArray]: ...
def proto_distances_backward(
    support: FloatArray,
    labels: npt.NDArray[np.int64],
    query: FloatArray,
    protos: FloatArray,
    grad_output: FloatArray,
    ways: int,
    metric: str = "sqeuclidean",
) -> tuple[FloatArray, FloatArray]: ...
def render_glyphs(
    seed: int, classes: npt.NDArray[np.int64], per_class: int, image_size: int
) -> npt.NDArray[np.uint8]: ...
def corrupt_into(
    images: npt.NDArray[np.uint8] | npt.NDArray[np.float32],
    out: npt.NDArray[np.uint8] | npt.NDArray[np.float32],
    name: str,
    severity: int,
    seed: int,
    index: int,
    ink: str,
) -> None: ...
def corruption_info() -> list[dict[str, Any]]: ...
def conv_block_forward(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    eps: float,
    out: npt.NDArray[np.float32],
) -> tuple[list[float], list[float]]: ...
def conv_block_backward(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float32],
    var: npt.NDArray[np.float32],
    eps: float,
    dout: npt.NDArray[np.float32],
) -> tuple[list[float], list[float], list[float], list[float]]: ...
def strided_block_forward(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    eps: float,
    out: npt.NDArray[np.float32],
    parallel: bool = True,
) -> tuple[list[float], list[float]]: ...
def strided_block_backward(
    x: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    var: npt.NDArray[np.float32],
    eps: float,
    out: npt.NDArray[np.float32],
    dout: npt.NDArray[np.float32],
    parallel: bool = True,
) -> tuple[list[float], list[float], list[float]]: ...

class VariableSamplerCore:
    def __new__(
        cls,
        images: list[npt.NDArray[np.uint8]],
        labels: list[npt.NDArray[np.int64]],
        weights: list[float],
        seed: int,
        classes: list[npt.NDArray[np.int64] | None],
        mean: list[float] | None,
        std: list[float] | None,
        sizes: list[int],
        log_weights: list[float],
    ) -> VariableSamplerCore: ...
    @property
    def seed(self) -> int: ...
    @property
    def image_shape(self) -> tuple[int, int, int]: ...
    @property
    def class_ids(self) -> list[list[int]]: ...
    def describe(self, start: int, count: int) -> npt.NDArray[np.int64]: ...
    def fill(
        self,
        start: int,
        count: int,
        support_x: npt.NDArray[np.float32] | npt.NDArray[np.uint8],
        support_y: npt.NDArray[np.int64],
        query_x: npt.NDArray[np.float32] | npt.NDArray[np.uint8],
        query_y: npt.NDArray[np.int64],
        classes: npt.NDArray[np.int64],
        info: npt.NDArray[np.int64],
    ) -> None: ...
