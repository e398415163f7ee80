//! Image corruptions on numpy arrays: dtype dispatch, checks, GIL release.

use metarobust_core::corruptions::{Corruption, Kind, INFO, NAMES};
use metarobust_core::pixel::Pixel;
use numpy::{Element, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::args;
use crate::arrays::{checked, disjoint, read, slice, slice_mut, span, write};
use crate::{guard, run_detached, to_py};

/// Writes the corruption of every image of `images` (uint8 or float32 in [0, 1],
/// C-contiguous `(N, C, H, W)`) into `out` (same dtype and shape). Image `j` uses the
/// randomness of item `j` of stream `index` under `seed`, as the episode sampler does for
/// item `j` of episode `index`.
#[pyfunction]
#[pyo3(signature = (images, out, name, severity, seed, index, ink))]
fn corrupt_into(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    severity: &Bound<'_, PyAny>,
    seed: &Bound<'_, PyAny>,
    index: &Bound<'_, PyAny>,
    ink: &Bound<'_, PyAny>,
) -> PyResult<()> {
    guard("corrupt_into", || {
        let name = args::string(name, "name")?;
        // Named here: the core's parser names the sampler's argument, `corruption`.
        Kind::parse(&name, "name").map_err(to_py)?;
        let options = Options {
            name,
            severity: args::int(severity, "severity")?,
            seed: args::uint64(seed, "seed")?,
            index: args::uint64(index, "index")?,
            ink: args::string(ink, "ink")?,
        };
        let is_f32 = images
            .cast::<PyUntypedArray>()
            .map(|a| a.dtype().is_equiv_to(&numpy::dtype::<f32>(py)))
            .unwrap_or(false);
        if is_f32 {
            run::<f32>(py, images, out, &options, "float32")
        } else {
            run::<u8>(py, images, out, &options, "uint8 or float32")
        }
    })
}

/// The scalar arguments of [`corrupt_into`], converted.
struct Options {
    name: String,
    severity: i64,
    seed: u64,
    index: u64,
    ink: String,
}

fn run<T: Pixel + Element>(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    o: &Options,
    dtype: &str,
) -> PyResult<()> {
    let images = checked::<T>(images, "images", dtype, 4)?;
    let out = checked::<T>(out, "out", dtype, 4)?;
    if images.shape() != out.shape() {
        return Err(PyValueError::new_err(format!(
            "out: shape {:?} differs from the images' {:?}",
            out.shape(),
            images.shape()
        )));
    }
    let shape = images.shape();
    let corruption = Corruption::new(&o.name, o.severity, &o.ink, [shape[1], shape[2], shape[3]])
        .map_err(to_py)?;
    disjoint(&[span(&out, "out")], &[span(&images, "images")])?;
    let (src, mut dst) = (read(&images, "images")?, write(&out, "out")?);
    let (src, dst) = (slice(&src, "images")?, slice_mut(&mut dst, "out")?);
    let (seed, index) = (o.seed, o.index);
    run_detached(py, || corruption.corrupt_batch(src, dst, seed, index))
}

/// What each corruption does, in the order of `CORRUPTIONS`: dicts with its `name`,
/// `family`, the `parameter` its severity sets, that parameter's five `values` (severities 1
/// to 5; lengths for 28x28 images) and a one-line `description`.
#[pyfunction]
fn corruption_info(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    guard("corruption_info", || {
        let rows = INFO.iter().map(|info| {
            let row = PyDict::new(py);
            row.set_item("name", info.name)?;
            row.set_item("family", info.family)?;
            row.set_item("parameter", info.parameter)?;
            row.set_item("values", PyTuple::new(py, info.values.map(shortest_f64))?)?;
            row.set_item("description", info.description)?;
            Ok(row)
        });
        PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
    })
}

/// `v` as the f64 of its shortest decimal (0.08, not 0.0799999982...), the number the
/// constant was written as.
fn shortest_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(corrupt_into, m)?)?;
    m.add_function(wrap_pyfunction!(corruption_info, m)?)?;
    m.add("CORRUPTIONS", PyTuple::new(m.py(), NAMES)?)?;
    Ok(())
}
