//! The episode sampler: holds a reference to the dataset arrays (never a copy) and fills
//! output arrays allocated by the caller, with the GIL released.

use metarobust_core::corruptions::{check_severity, Corruption, Ink, Target};
use metarobust_core::sampler::{BatchOut, EpisodeSampler, Pixel, PixelTable, DEFAULT_CACHE_BYTES};
use numpy::{Element, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::arrays::{checked, non_negative, positive};
use crate::{run_detached, to_py};

#[pyclass(frozen, module = "metarobust._core")]
pub struct SamplerCore {
    inner: EpisodeSampler,
    table: PixelTable,
    /// Keeps the (possibly memory-mapped) images alive; read without the GIL.
    images: Py<PyArrayDyn<u8>>,
    image_shape: [usize; 3],
}

#[pymethods]
impl SamplerCore {
    #[new]
    #[pyo3(signature = (
        images, labels, ways, shots, queries, seed, classes=None, mean=None, std=None,
        corruption=None, severity=3, corrupt="query", ink="dark", cache_bytes=DEFAULT_CACHE_BYTES
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        ways: i64,
        shots: i64,
        queries: i64,
        seed: u64,
        classes: Option<&Bound<'_, PyAny>>,
        mean: Option<Vec<f32>>,
        std: Option<Vec<f32>>,
        corruption: Option<&str>,
        severity: i64,
        corrupt: &str,
        ink: &str,
        cache_bytes: usize,
    ) -> PyResult<Self> {
        let images = checked::<u8>(images, "images", "uint8", 4)?;
        let labels = checked::<i64>(labels, "labels", "int64", 1)?;
        let shape = images.shape().to_vec();
        if shape[0] != labels.len() {
            return Err(PyValueError::new_err(format!(
                "labels: {} labels for {} images; the lengths must match",
                labels.len(),
                shape[0]
            )));
        }
        let (ways, shots, queries) = (
            positive(ways, "ways")?,
            positive(shots, "shots")?,
            non_negative(queries, "queries")?,
        );
        let classes: Option<Vec<i64>> = match classes {
            None => None,
            Some(c) => Some(
                checked::<i64>(c, "classes", "int64", 1)?
                    .readonly()
                    .as_slice()?
                    .to_vec(),
            ),
        };
        let item_size = shape[1] * shape[2] * shape[3];
        let image_shape = [shape[1], shape[2], shape[3]];
        let (corruption, target) =
            corruption_options(corruption, severity, corrupt, ink, image_shape)?;
        let table = PixelTable::new(
            shape[1],
            shape[2] * shape[3],
            mean.as_deref().unwrap_or(&[]),
            std.as_deref().unwrap_or(&[]),
        )
        .map_err(to_py)?;
        let labels_ro = labels.readonly();
        let label_slice = labels_ro.as_slice()?;
        let inner = run_detached(py, || {
            let sampler = EpisodeSampler::new(
                label_slice,
                item_size,
                ways,
                shots,
                queries,
                seed,
                classes.as_deref(),
            )?
            .with_cache_budget(cache_bytes);
            match corruption {
                Some(c) => sampler.with_corruption(c, target),
                None => Ok(sampler),
            }
        })?;
        Ok(Self {
            inner,
            table,
            images: images.unbind(),
            image_shape,
        })
    }

    #[getter]
    fn ways(&self) -> usize {
        self.inner.ways()
    }
    #[getter]
    fn shots(&self) -> usize {
        self.inner.shots()
    }
    #[getter]
    fn queries(&self) -> usize {
        self.inner.queries()
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed()
    }
    #[getter]
    fn image_shape(&self) -> (usize, usize, usize) {
        (
            self.image_shape[0],
            self.image_shape[1],
            self.image_shape[2],
        )
    }
    #[getter]
    fn class_ids(&self) -> Vec<i64> {
        self.inner.class_ids().to_vec()
    }

    /// Whether the corruption cache for `dtype` output ("float32" or "uint8") is built.
    fn cache_built(&self, dtype: &str) -> PyResult<bool> {
        match dtype {
            "float32" => Ok(self.inner.cache_built::<f32>()),
            "uint8" => Ok(self.inner.cache_built::<u8>()),
            _ => Err(PyValueError::new_err(format!(
                "dtype: expected 'float32' or 'uint8', got {dtype:?}"
            ))),
        }
    }

    /// Fills caller-allocated outputs with episodes `start .. start + count`. The image
    /// outputs are uint8 or float32; their dtype picks the conversion.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        py: Python<'_>,
        start: u64,
        count: i64,
        support_x: &Bound<'_, PyAny>,
        support_y: &Bound<'_, PyAny>,
        query_x: &Bound<'_, PyAny>,
        query_y: &Bound<'_, PyAny>,
        classes: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let count = non_negative(count, "count")?;
        let images = self.images.bind(py).readonly();
        let images = images.as_slice()?;
        let mut sy = checked::<i64>(support_y, "support_y", "int64", 2)?.readwrite();
        let mut qy = checked::<i64>(query_y, "query_y", "int64", 2)?.readwrite();
        let mut cl = checked::<i64>(classes, "classes", "int64", 2)?.readwrite();
        let labels = (sy.as_slice_mut()?, qy.as_slice_mut()?, cl.as_slice_mut()?);
        if checked::<f32>(support_x, "support_x", "float32", 5).is_ok() {
            self.fill_as::<f32>(
                py, start, count, images, support_x, query_x, labels, "float32",
            )
        } else {
            self.fill_as::<u8>(
                py,
                start,
                count,
                images,
                support_x,
                query_x,
                labels,
                "uint8 or float32",
            )
        }
    }
}

/// The corruption of `(C, H, W)` images named `name` (if any) and the items it applies to.
/// The options are checked even without a corruption, so that a bad value fails here, not
/// later.
fn corruption_options(
    name: Option<&str>,
    severity: i64,
    corrupt: &str,
    ink: &str,
    shape: [usize; 3],
) -> PyResult<(Option<Corruption>, Target)> {
    let target = Target::parse(corrupt).map_err(to_py)?;
    check_severity(severity).map_err(to_py)?;
    Ink::parse(ink).map_err(to_py)?;
    let corruption = name
        .map(|name| Corruption::new(name, severity, ink, shape))
        .transpose()
        .map_err(to_py)?;
    Ok((corruption, target))
}

type LabelOutputs<'a> = (&'a mut [i64], &'a mut [i64], &'a mut [i64]);

impl SamplerCore {
    /// `fill` once the image outputs' element type is known.
    #[allow(clippy::too_many_arguments)]
    fn fill_as<T: Pixel + Element>(
        &self,
        py: Python<'_>,
        start: u64,
        count: usize,
        images: &[u8],
        support_x: &Bound<'_, PyAny>,
        query_x: &Bound<'_, PyAny>,
        (support_y, query_y, classes): LabelOutputs<'_>,
        dtype: &str,
    ) -> PyResult<()> {
        let mut sx = checked::<T>(support_x, "support_x", dtype, 5)?.readwrite();
        let mut qx = checked::<T>(query_x, "query_x", dtype, 5)?.readwrite();
        let out = BatchOut {
            support_x: sx.as_slice_mut()?,
            support_y,
            query_x: qx.as_slice_mut()?,
            query_y,
            classes,
        };
        run_detached(py, || {
            self.inner
                .sample_into(images, &self.table, start, count, out)
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SamplerCore>()
}
