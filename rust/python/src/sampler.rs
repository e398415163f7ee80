//! The episode sampler: holds a reference to the dataset arrays (never a copy) and fills
//! output arrays allocated by the caller, with the GIL released. The outputs' shapes are
//! checked exactly, and none may share memory with another or with the dataset.

use metarobust_core::corruptions::{check_severity, Corruption, Ink, Target};
use metarobust_core::memory::try_to_vec;
use metarobust_core::sampler::{BatchOut, EpisodeSampler, Pixel, PixelTable, DEFAULT_CACHE_BYTES};
use numpy::{Element, PyArrayDescrMethods, PyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::args::{self, given, Given};
use crate::arrays::{checked, disjoint, read, slice, slice_mut, span, write};
use crate::{guard, run_detached, to_py};

#[pyclass(frozen, module = "metarobust._core")]
pub struct SamplerCore {
    inner: EpisodeSampler,
    table: PixelTable,
    /// Keeps the (possibly memory-mapped) images alive; read without the GIL.
    images: Py<PyArrayDyn<u8>>,
    image_shape: [usize; 3],
}

/// The optional arguments of the constructor, as given.
struct Options<'a, 'py> {
    classes: Option<&'a Bound<'py, PyAny>>,
    mean: Option<&'a Bound<'py, PyAny>>,
    std: Option<&'a Bound<'py, PyAny>>,
    corruption: Option<&'a Bound<'py, PyAny>>,
    severity: &'a Given<'py>,
    corrupt: &'a Given<'py>,
    ink: &'a Given<'py>,
    cache_bytes: &'a Given<'py>,
}

#[pymethods]
impl SamplerCore {
    #[new]
    #[pyo3(
        signature = (
            images, labels, ways, shots, queries, seed, classes=None, mean=None, std=None,
            corruption=None, severity=Given(None), corrupt=Given(None), ink=Given(None),
            cache_bytes=Given(None)
        ),
        text_signature = "(images, labels, ways, shots, queries, seed, classes=None, mean=None, \
                          std=None, corruption=None, severity=3, corrupt='query', ink='dark', \
                          cache_bytes=268435456)"
    )]
    fn new(
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        ways: &Bound<'_, PyAny>,
        shots: &Bound<'_, PyAny>,
        queries: &Bound<'_, PyAny>,
        seed: &Bound<'_, PyAny>,
        classes: Option<&Bound<'_, PyAny>>,
        mean: Option<&Bound<'_, PyAny>>,
        std: Option<&Bound<'_, PyAny>>,
        corruption: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = given)] severity: Given<'_>,
        #[pyo3(from_py_with = given)] corrupt: Given<'_>,
        #[pyo3(from_py_with = given)] ink: Given<'_>,
        #[pyo3(from_py_with = given)] cache_bytes: Given<'_>,
    ) -> PyResult<Self> {
        let options = Options {
            classes,
            mean,
            std,
            corruption,
            severity: &severity,
            corrupt: &corrupt,
            ink: &ink,
            cache_bytes: &cache_bytes,
        };
        guard("SamplerCore.__new__", || {
            Self::build(py, images, labels, [ways, shots, queries, seed], options)
        })
    }

    #[getter]
    fn ways(&self) -> PyResult<usize> {
        guard("SamplerCore.ways", || Ok(self.inner.ways()))
    }
    #[getter]
    fn shots(&self) -> PyResult<usize> {
        guard("SamplerCore.shots", || Ok(self.inner.shots()))
    }
    #[getter]
    fn queries(&self) -> PyResult<usize> {
        guard("SamplerCore.queries", || Ok(self.inner.queries()))
    }
    #[getter]
    fn seed(&self) -> PyResult<u64> {
        guard("SamplerCore.seed", || Ok(self.inner.seed()))
    }
    #[getter]
    fn image_shape(&self) -> PyResult<(usize, usize, usize)> {
        guard("SamplerCore.image_shape", || {
            let [c, h, w] = self.image_shape;
            Ok((c, h, w))
        })
    }
    #[getter]
    fn class_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        guard("SamplerCore.class_ids", || {
            PyList::new(py, self.inner.class_ids())
        })
    }

    /// Whether the corruption cache for `dtype` output ("float32" or "uint8") is built.
    fn cache_built(&self, dtype: &Bound<'_, PyAny>) -> PyResult<bool> {
        guard("SamplerCore.cache_built", || {
            match args::string(dtype, "dtype")?.as_str() {
                "float32" => Ok(self.inner.cache_built::<f32>()),
                "uint8" => Ok(self.inner.cache_built::<u8>()),
                other => Err(PyValueError::new_err(format!(
                    "dtype: expected 'float32' or 'uint8', got {other:?}"
                ))),
            }
        })
    }

    /// Fills caller-allocated outputs with episodes `start .. start + count`. The image
    /// outputs are uint8 or float32; their dtype picks the conversion.
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
        guard("SamplerCore.fill", || {
            let start = args::uint64(start, "start")?;
            let count = args::non_negative(count, "count")?;
            let outputs = [support_x, support_y, query_x, query_y, classes];
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

/// The corruption of `(C, H, W)` images named `name` (if any) and the items it applies to.
/// The options are checked even without a corruption, so that a bad value fails here, not
/// later.
fn corruption_options(
    options: &Options<'_, '_>,
    shape: [usize; 3],
) -> PyResult<(Option<Corruption>, Target)> {
    let target = Target::parse(
        &options
            .corrupt
            .get("corrupt", args::string, "query".into())?,
    )
    .map_err(to_py)?;
    let severity = options.severity.get("severity", args::int, 3)?;
    check_severity(severity).map_err(to_py)?;
    let ink = options.ink.get("ink", args::string, "dark".into())?;
    Ink::parse(&ink).map_err(to_py)?;
    let name = match options.corruption.filter(|c| !c.is_none()) {
        Some(c) => Some(args::string(c, "corruption")?),
        None => None,
    };
    let corruption = name
        .map(|name| Corruption::new(&name, severity, &ink, shape))
        .transpose()
        .map_err(to_py)?;
    Ok((corruption, target))
}

type Sizes<'a, 'py> = [&'a Bound<'py, PyAny>; 4];

impl SamplerCore {
    /// The constructor's body: checks, the class index, the pixel conversion.
    fn build(
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        [ways, shots, queries, seed]: Sizes<'_, '_>,
        options: Options<'_, '_>,
    ) -> PyResult<Self> {
        let images = checked::<u8>(images, "images", "uint8", 4)?;
        let labels = checked::<i64>(labels, "labels", "int64", 1)?;
        let shape = images.shape(); // four sizes: checked above
        if shape[1..].contains(&0) {
            return Err(PyValueError::new_err(format!(
                "images: every image needs at least one channel and pixel, got shape {shape:?}"
            )));
        }
        if shape[0] != labels.len() {
            return Err(PyValueError::new_err(format!(
                "labels: {} labels for {} images; the lengths must match",
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
        let classes: Option<Vec<i64>> = match options.classes.filter(|c| !c.is_none()) {
            None => None,
            Some(c) => {
                let c = checked::<i64>(c, "classes", "int64", 1)?;
                let ro = read(&c, "classes")?;
                Some(try_to_vec(slice(&ro, "classes")?, "classes").map_err(to_py)?)
            }
        };
        let image_shape = [shape[1], shape[2], shape[3]];
        let item_size = image_shape.iter().product();
        let (corruption, target) = corruption_options(&options, image_shape)?;
        let mean = args::float32_list(options.mean, "mean")?;
        let std = args::float32_list(options.std, "std")?;
        let table = PixelTable::new(
            shape[1],
            shape[2] * shape[3],
            mean.as_deref().unwrap_or(&[]),
            std.as_deref().unwrap_or(&[]),
        )
        .map_err(to_py)?;
        let cache_bytes =
            options
                .cache_bytes
                .get("cache_bytes", args::non_negative, DEFAULT_CACHE_BYTES)?;
        let labels_ro = read(&labels, "labels")?;
        let label_slice = slice(&labels_ro, "labels")?;
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

    /// `fill` once the image outputs' element type is known.
    fn fill_as<T: Pixel + Element>(
        &self,
        py: Python<'_>,
        start: u64,
        count: usize,
        [support_x, support_y, query_x, query_y, classes]: [&Bound<'_, PyAny>; 5],
        dtype: &str,
    ) -> PyResult<()> {
        let sx = checked::<T>(support_x, "support_x", dtype, 5)?;
        let sy = checked::<i64>(support_y, "support_y", "int64", 2)?;
        let qx = checked::<T>(query_x, "query_x", dtype, 5)?;
        let qy = checked::<i64>(query_y, "query_y", "int64", 2)?;
        let cl = checked::<i64>(classes, "classes", "int64", 2)?;
        let (w, s, q) = (self.inner.ways(), self.inner.shots(), self.inner.queries());
        let [c, h, wd] = self.image_shape;
        expect_shape(sx.shape(), "support_x", &[count, w * s, c, h, wd])?;
        expect_shape(sy.shape(), "support_y", &[count, w * s])?;
        expect_shape(qx.shape(), "query_x", &[count, w * q, c, h, wd])?;
        expect_shape(qy.shape(), "query_y", &[count, w * q])?;
        expect_shape(cl.shape(), "classes", &[count, w])?;
        let images = self.images.bind(py);
        disjoint(
            &[
                span(&sx, "support_x"),
                span(&sy, "support_y"),
                span(&qx, "query_x"),
                span(&qy, "query_y"),
                span(&cl, "classes"),
            ],
            &[span(images, "the sampler's images")],
        )?;
        let images = read(images, "images")?;
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
        let images = slice(&images, "images")?;
        run_detached(py, || {
            self.inner
                .sample_into(images, &self.table, start, count, out)
        })
    }
}

/// `shape` must be `want` (sizes `ways * shots` and the like fit: the sampler checked their
/// products with the image size when it was built).
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
    m.add_class::<SamplerCore>()
}
