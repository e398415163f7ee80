//! The variable-way episode sampler: holds references to each source's arrays (never
//! copies) and fills padded output arrays allocated by the caller, with the GIL released.

use metarobust_core::memory::try_to_vec;
use metarobust_core::sampler::{
    Description, EpisodeSampler, Pixel, PixelTable, VariableConfig, VariableOut, VariableSampler,
    INFO_COLUMNS,
};
use numpy::{Element, PyArrayDescrMethods, PyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySequence};

use crate::args;
use crate::arrays::{checked, disjoint, new_array, read, slice, slice_mut, span, write, Span};
use crate::{guard, run_detached, to_py};

#[pyclass(frozen, module = "metarobust._core")]
pub struct VariableSamplerCore {
    inner: VariableSampler,
    table: PixelTable,
    /// Each source's (possibly memory-mapped) images, kept alive; read without the GIL.
    images: Vec<Py<PyArrayDyn<u8>>>,
    image_shape: [usize; 3],
}

/// The items of the Python list or tuple `obj`, the argument `name`.
fn items<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let seq = obj
        .cast::<PySequence>()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected a list")))?;
    seq.try_iter()?.collect()
}

#[pymethods]
impl VariableSamplerCore {
    /// `sizes`: min_ways, max_ways, max_support, max_support_per_class,
    /// max_query_per_class; `log_weights`: min_log_weight, max_log_weight.
    #[new]
    #[pyo3(signature = (images, labels, weights, seed, classes, mean, std, sizes, log_weights))]
    fn new(
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        seed: &Bound<'_, PyAny>,
        classes: &Bound<'_, PyAny>,
        mean: &Bound<'_, PyAny>,
        std: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        log_weights: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        guard("VariableSamplerCore.__new__", || {
            let seed = args::uint64(seed, "seed")?;
            let names = [
                "min_ways",
                "max_ways",
                "max_support",
                "max_support_per_class",
                "max_query_per_class",
            ];
            let sizes = items(sizes, "sizes")?;
            let logs = items(log_weights, "log_weights")?;
            if sizes.len() != names.len() || logs.len() != 2 {
                return Err(PyValueError::new_err(
                    "sizes/log_weights: expected 5 sizes and 2 log-weights",
                ));
            }
            let s: Vec<usize> = sizes
                .iter()
                .zip(names)
                .map(|(v, n)| args::positive(v, n))
                .collect::<PyResult<_>>()?;
            let config = VariableConfig {
                min_ways: s[0],
                max_ways: s[1],
                max_support: s[2],
                max_support_per_class: s[3],
                max_query_per_class: s[4],
                min_log_weight: args::float(&logs[0], "min_log_weight")?,
                max_log_weight: args::float(&logs[1], "max_log_weight")?,
            };
            let weights: Vec<f64> = items(weights, "weights")?
                .iter()
                .map(|w| args::float(w, "weights"))
                .collect::<PyResult<_>>()?;
            let mean = args::float32_list(Some(mean), "mean")?;
            let std = args::float32_list(Some(std), "std")?;
            Self::build(
                py,
                images,
                labels,
                classes,
                (weights, seed, config),
                (mean, std),
            )
        })
    }

    #[getter]
    fn seed(&self) -> PyResult<u64> {
        guard("VariableSamplerCore.seed", || Ok(self.inner.seed()))
    }
    #[getter]
    fn image_shape(&self) -> PyResult<(usize, usize, usize)> {
        guard("VariableSamplerCore.image_shape", || {
            let [c, h, w] = self.image_shape;
            Ok((c, h, w))
        })
    }
    /// The dataset classes that episodes of each source draw from.
    #[getter]
    fn class_ids<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyList>>> {
        guard("VariableSamplerCore.class_ids", || {
            self.inner
                .sources()
                .iter()
                .map(|s| PyList::new(py, s.class_ids()))
                .collect()
        })
    }

    /// `(count, 4)` int64: source, ways, support items, query items of episodes
    /// `start .. start + count`.
    fn describe<'py>(
        &self,
        py: Python<'py>,
        start: &Bound<'_, PyAny>,
        count: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard("VariableSamplerCore.describe", || {
            let start = args::uint64(start, "start")?;
            let count = args::non_negative(count, "count")?;
            if count > 0 && start.checked_add(count as u64 - 1).is_none() {
                return Err(PyValueError::new_err(format!(
                    "start: episodes {start} .. {start} + {count} pass the last index 2**64 - 1"
                )));
            }
            let out = new_array::<i64, 2>(py, [count, INFO_COLUMNS], "count", false)?;
            let mut descs: Vec<Description> = Vec::new();
            py.detach(|| self.inner.describe_range(start, count, &mut descs));
            {
                let mut w = write(&out, "info")?;
                let rows = slice_mut(&mut w, "info")?;
                for (row, e) in rows.chunks_mut(INFO_COLUMNS).zip(&descs) {
                    let v = [e.source, e.ways(), e.support_size(), e.query_size()];
                    for (o, x) in row.iter_mut().zip(v) {
                        *o = x as i64;
                    }
                }
            }
            Ok(out.into_any())
        })
    }

    /// Fills caller-allocated padded outputs with episodes `start .. start + count`. The
    /// image outputs are uint8 or float32; their dtype picks the conversion.
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
        info: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard("VariableSamplerCore.fill", || {
            let start = args::uint64(start, "start")?;
            let count = args::non_negative(count, "count")?;
            let outputs = [support_x, support_y, query_x, query_y, classes, info];
            let is_f32 = support_x
                .cast::<PyUntypedArray>()
                .map(|a| a.dtype().is_equiv_to(&numpy::dtype::<f32>(py)))
                .unwrap_or(false);
            if is_f32 {
                self.fill_as::<f32>(py, start, count, outputs, "float32")
            } else {
                self.fill_as::<u8>(py, start, count, outputs, "uint8 or float32")
            }
        })
    }
}

type Options = (Vec<f64>, u64, VariableConfig);

impl VariableSamplerCore {
    /// The constructor's body: each source's class index, the sampler, the conversion.
    fn build(
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        classes: &Bound<'_, PyAny>,
        (weights, seed, config): Options,
        (mean, std): (Option<Vec<f32>>, Option<Vec<f32>>),
    ) -> PyResult<Self> {
        let (images, labels, classes) = (
            items(images, "images")?,
            items(labels, "labels")?,
            items(classes, "classes")?,
        );
        if labels.len() != images.len() || classes.len() != images.len() || images.is_empty() {
            return Err(PyValueError::new_err(format!(
                "sources: {} image arrays, {} label arrays, {} class lists; need one of each \
                 per source, at least one source",
                images.len(),
                labels.len(),
                classes.len()
            )));
        }
        let mut kept = Vec::new();
        let mut sources = Vec::new();
        let mut shape0 = [0usize; 3];
        for (i, ((im, lb), cl)) in images.iter().zip(&labels).zip(&classes).enumerate() {
            let im = checked::<u8>(im, &format!("images[{i}]"), "uint8", 4)?;
            let lb = checked::<i64>(lb, &format!("labels[{i}]"), "int64", 1)?;
            let shape = [im.shape()[1], im.shape()[2], im.shape()[3]];
            if i == 0 {
                shape0 = shape;
            } else if shape != shape0 {
                return Err(PyValueError::new_err(format!(
                    "images[{i}]: images of shape {shape:?}, source 0 holds {shape0:?}; all \
                     sources need one image shape"
                )));
            }
            if shape.contains(&0) || im.shape()[0] != lb.len() {
                return Err(PyValueError::new_err(format!(
                    "labels[{i}]: {} labels for images of shape {:?}; one label per \
                     non-empty image needed",
                    lb.len(),
                    im.shape()
                )));
            }
            let list: Option<Vec<i64>> = if cl.is_none() {
                None
            } else {
                let c = checked::<i64>(cl, &format!("classes[{i}]"), "int64", 1)?;
                let ro = read(&c, "classes")?;
                Some(try_to_vec(slice(&ro, "classes")?, "classes").map_err(to_py)?)
            };
            let ro = read(&lb, "labels")?;
            let lab = slice(&ro, "labels")?;
            let d = shape.iter().product();
            let source = py
                .detach(|| EpisodeSampler::new(lab, d, 1, 1, 0, seed, list.as_deref()))
                .map_err(|e| prefix(e, i))?;
            sources.push(source);
            kept.push(im.unbind());
        }
        let inner = VariableSampler::new(sources, &weights, config, seed).map_err(to_py)?;
        let table = PixelTable::new(
            shape0[0],
            shape0[1] * shape0[2],
            mean.as_deref().unwrap_or(&[]),
            std.as_deref().unwrap_or(&[]),
        )
        .map_err(to_py)?;
        Ok(Self {
            inner,
            table,
            images: kept,
            image_shape: shape0,
        })
    }

    /// `fill` once the image outputs' element type is known.
    fn fill_as<T: Pixel + Element>(
        &self,
        py: Python<'_>,
        start: u64,
        count: usize,
        [support_x, support_y, query_x, query_y, classes, info]: [&Bound<'_, PyAny>; 6],
        dtype: &str,
    ) -> PyResult<()> {
        let sx = checked::<T>(support_x, "support_x", dtype, 5)?;
        let sy = checked::<i64>(support_y, "support_y", "int64", 2)?;
        let qx = checked::<T>(query_x, "query_x", dtype, 5)?;
        let qy = checked::<i64>(query_y, "query_y", "int64", 2)?;
        let cl = checked::<i64>(classes, "classes", "int64", 2)?;
        let inf = checked::<i64>(info, "info", "int64", 2)?;
        let [c, h, w] = self.image_shape;
        let (sp, qp, wp) = (sy.shape()[1], qy.shape()[1], cl.shape()[1]);
        expect_shape(sx.shape(), "support_x", &[count, sp, c, h, w])?;
        expect_shape(sy.shape(), "support_y", &[count, sp])?;
        expect_shape(qx.shape(), "query_x", &[count, qp, c, h, w])?;
        expect_shape(qy.shape(), "query_y", &[count, qp])?;
        expect_shape(cl.shape(), "classes", &[count, wp])?;
        expect_shape(inf.shape(), "info", &[count, INFO_COLUMNS])?;
        let sources: Vec<_> = self.images.iter().map(|a| a.bind(py)).collect();
        let inputs: Vec<Span<'_>> = sources
            .iter()
            .map(|a| span(a, "a source's images"))
            .collect();
        disjoint(
            &[
                span(&sx, "support_x"),
                span(&sy, "support_y"),
                span(&qx, "query_x"),
                span(&qy, "query_y"),
                span(&cl, "classes"),
                span(&inf, "info"),
            ],
            &inputs,
        )?;
        let reads = sources
            .iter()
            .map(|a| read(a, "images"))
            .collect::<PyResult<Vec<_>>>()?;
        let images = reads
            .iter()
            .map(|r| slice(r, "images"))
            .collect::<PyResult<Vec<_>>>()?;
        let (mut sxw, mut syw) = (write(&sx, "support_x")?, write(&sy, "support_y")?);
        let (mut qxw, mut qyw) = (write(&qx, "query_x")?, write(&qy, "query_y")?);
        let (mut clw, mut infw) = (write(&cl, "classes")?, write(&inf, "info")?);
        let out = VariableOut {
            support: sp,
            query: qp,
            ways: wp,
            support_x: slice_mut(&mut sxw, "support_x")?,
            support_y: slice_mut(&mut syw, "support_y")?,
            query_x: slice_mut(&mut qxw, "query_x")?,
            query_y: slice_mut(&mut qyw, "query_y")?,
            classes: slice_mut(&mut clw, "classes")?,
            info: slice_mut(&mut infw, "info")?,
        };
        run_detached(py, || {
            self.inner
                .sample_into(&images, &self.table, start, count, out)
        })
    }
}

/// A source's error, naming the source.
fn prefix(e: metarobust_core::Error, i: usize) -> PyErr {
    use metarobust_core::Error;
    to_py(match e {
        Error::Value(m) => Error::Value(format!("sources[{i}]: {m}")),
        Error::Type(m) => Error::Type(format!("sources[{i}]: {m}")),
        Error::Memory(m) => Error::Memory(format!("sources[{i}]: {m}")),
    })
}

fn expect_shape(shape: &[usize], name: &str, want: &[usize]) -> PyResult<()> {
    if shape != want {
        return Err(PyValueError::new_err(format!(
            "{name}: output buffer has shape {shape:?}, expected {want:?}"
        )));
    }
    Ok(())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<VariableSamplerCore>()
}
