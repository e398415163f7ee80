//! The feature-episode sampler: episodes of pre-extracted `float32` feature vectors
//! `(N, D)`, drawn as the image sampler draws them. Holds a reference to the features
//! (never a copy), checked finite when the sampler is built; fills caller-allocated
//! outputs with the GIL released.

use metarobust_core::memory::try_to_vec;
use metarobust_core::sampler::{check_features, BatchOut, EpisodeSampler};
use numpy::{PyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::args;
use crate::arrays::{checked, disjoint, read, slice, slice_mut, span, write};
use crate::{guard, run_detached, to_py};

#[pyclass(frozen, module = "metarobust._core")]
pub struct FeatureSamplerCore {
    inner: EpisodeSampler,
    /// Keeps the (possibly memory-mapped) features alive; read without the GIL.
    features: Py<PyArrayDyn<f32>>,
    dim: usize,
}

#[pymethods]
impl FeatureSamplerCore {
    #[new]
    #[pyo3(
        signature = (features, labels, ways, shots, queries, seed, classes=None),
        text_signature = "(features, labels, ways, shots, queries, seed, classes=None)"
    )]
    fn new(
        py: Python<'_>,
        features: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        ways: &Bound<'_, PyAny>,
        shots: &Bound<'_, PyAny>,
        queries: &Bound<'_, PyAny>,
        seed: &Bound<'_, PyAny>,
        classes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard("FeatureSamplerCore.__new__", || {
            Self::build(py, features, labels, [ways, shots, queries, seed], classes)
        })
    }

    #[getter]
    fn ways(&self) -> PyResult<usize> {
        guard("FeatureSamplerCore.ways", || Ok(self.inner.ways()))
    }
    #[getter]
    fn shots(&self) -> PyResult<usize> {
        guard("FeatureSamplerCore.shots", || Ok(self.inner.shots()))
    }
    #[getter]
    fn queries(&self) -> PyResult<usize> {
        guard("FeatureSamplerCore.queries", || Ok(self.inner.queries()))
    }
    #[getter]
    fn seed(&self) -> PyResult<u64> {
        guard("FeatureSamplerCore.seed", || Ok(self.inner.seed()))
    }
    #[getter]
    fn feature_dim(&self) -> PyResult<usize> {
        guard("FeatureSamplerCore.feature_dim", || Ok(self.dim))
    }
    #[getter]
    fn class_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        guard("FeatureSamplerCore.class_ids", || {
            PyList::new(py, self.inner.class_ids())
        })
    }

    /// Fills caller-allocated outputs with feature episodes `start .. start + count`:
    /// support_x `(count, ways * shots, D)` and query_x `(count, ways * queries, D)` float32,
    /// the labels and classes int64.
    fn fill(
        &self,
        py: Python<'_>,
        start: &Bound<'_, PyAny>,
        count: &Bound<'_, PyAny>,
        support_x: &Bound<'_, PyAny>,
        support_y: &Bound<'_, PyAny>,
        query_x: &Bound<'_, PyAny>,
        query_y: &Bound<'_, PyAny>,
        classes: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard("FeatureSamplerCore.fill", || {
            let start = args::uint64(start, "start")?;
            let count = args::non_negative(count, "count")?;
            self.fill_checked(
                py,
                start,
                count,
                [support_x, support_y, query_x, query_y, classes],
            )
        })
    }
}

type Sizes<'a, 'py> = [&'a Bound<'py, PyAny>; 4];

impl FeatureSamplerCore {
    /// The constructor's body: checks (finite features included) and the class index.
    fn build(
        py: Python<'_>,
        features: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        [ways, shots, queries, seed]: Sizes<'_, '_>,
        classes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let features = checked::<f32>(features, "features", "float32", 2)?;
        let labels = checked::<i64>(labels, "labels", "int64", 1)?;
        let shape = [features.shape()[0], features.shape()[1]]; // two sizes: checked above
        if shape[1] == 0 {
            return Err(PyValueError::new_err(format!(
                "features: every item needs at least one dimension, got shape {shape:?}"
            )));
        }
        if shape[0] != labels.len() {
            return Err(PyValueError::new_err(format!(
                "labels: {} labels for {} feature vectors; the lengths must match",
                labels.len(),
                shape[0]
            )));
        }
        let (ways, shots, queries) = (
            args::positive(ways, "ways")?,
            args::positive(shots, "shots")?,
            args::non_negative(queries, "queries")?,
        );
        let seed = args::uint64(seed, "seed")?;
        let classes: Option<Vec<i64>> = match classes.filter(|c| !c.is_none()) {
            None => None,
            Some(c) => {
                let c = checked::<i64>(c, "classes", "int64", 1)?;
                let ro = read(&c, "classes")?;
                Some(try_to_vec(slice(&ro, "classes")?, "classes").map_err(to_py)?)
            }
        };
        let dim = shape[1];
        let labels_ro = read(&labels, "labels")?;
        let label_slice = slice(&labels_ro, "labels")?;
        let features_ro = read(&features, "features")?;
        let feature_slice = slice(&features_ro, "features")?;
        let inner = run_detached(py, || {
            check_features(feature_slice, dim)?;
            EpisodeSampler::new(
                label_slice,
                dim,
                ways,
                shots,
                queries,
                seed,
                classes.as_deref(),
            )
        })?;
        drop(features_ro);
        Ok(Self {
            inner,
            features: features.unbind(),
            dim,
        })
    }

    /// `fill` once the start and count are read.
    fn fill_checked(
        &self,
        py: Python<'_>,
        start: u64,
        count: usize,
        [support_x, support_y, query_x, query_y, classes]: [&Bound<'_, PyAny>; 5],
    ) -> PyResult<()> {
        let sx = checked::<f32>(support_x, "support_x", "float32", 3)?;
        let sy = checked::<i64>(support_y, "support_y", "int64", 2)?;
        let qx = checked::<f32>(query_x, "query_x", "float32", 3)?;
        let qy = checked::<i64>(query_y, "query_y", "int64", 2)?;
        let cl = checked::<i64>(classes, "classes", "int64", 2)?;
        let (w, s, q, d) = (
            self.inner.ways(),
            self.inner.shots(),
            self.inner.queries(),
            self.dim,
        );
        expect_shape(sx.shape(), "support_x", &[count, w * s, d])?;
        expect_shape(sy.shape(), "support_y", &[count, w * s])?;
        expect_shape(qx.shape(), "query_x", &[count, w * q, d])?;
        expect_shape(qy.shape(), "query_y", &[count, w * q])?;
        expect_shape(cl.shape(), "classes", &[count, w])?;
        let features = self.features.bind(py);
        disjoint(
            &[
                span(&sx, "support_x"),
                span(&sy, "support_y"),
                span(&qx, "query_x"),
                span(&qy, "query_y"),
                span(&cl, "classes"),
            ],
            &[span(features, "the sampler's features")],
        )?;
        let features = read(features, "features")?;
        let (mut sxw, mut syw) = (write(&sx, "support_x")?, write(&sy, "support_y")?);
        let (mut qxw, mut qyw) = (write(&qx, "query_x")?, write(&qy, "query_y")?);
        let mut clw = write(&cl, "classes")?;
        let out = BatchOut {
            support_x: slice_mut(&mut sxw, "support_x")?,
            support_y: slice_mut(&mut syw, "support_y")?,
            query_x: slice_mut(&mut qxw, "query_x")?,
            query_y: slice_mut(&mut qyw, "query_y")?,
            classes: slice_mut(&mut clw, "classes")?,
        };
        let features = slice(&features, "features")?;
        run_detached(py, || {
            self.inner.sample_features_into(features, start, count, out)
        })
    }
}

/// `shape` must be `want`.
fn expect_shape(shape: &[usize], name: &str, want: &[usize]) -> PyResult<()> {
    if shape != want {
        return Err(PyValueError::new_err(format!(
            "{name}: output buffer has shape {shape:?}, a batch of {} episodes needs {want:?}",
            want[0]
        )));
    }
    Ok(())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FeatureSamplerCore>()
}
