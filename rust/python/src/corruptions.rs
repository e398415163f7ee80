//! Image corruptions on numpy arrays: dtype dispatch, checks, GIL release.

use metarobust_core::corruptions::{Corruption, INFO, NAMES};
use metarobust_core::pixel::Pixel;
use numpy::{Element, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::arrays::checked;
use crate::{run_detached, to_py};

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
    name: &str,
    severity: i64,
    seed: u64,
    index: u64,
    ink: &str,
) -> PyResult<()> {
    let is_f32 = images
        .cast::<PyUntypedArray>()
        .map(|a| a.dtype().is_equiv_to(&numpy::dtype::<f32>(py)))
        .unwrap_or(false);
    if is_f32 {
        run::<f32>(py, images, out, name, severity, seed, index, ink, "float32")
    } else {
        run::<u8>(
            py,
            images,
            out,
            name,
            severity,
            seed,
            index,
            ink,
            "uint8 or float32",
        )
    }
}

fn run<T: Pixel + Element>(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    name: &str,
    severity: i64,
    seed: u64,
    index: u64,
    ink: &str,
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
    let corruption =
        Corruption::new(name, severity, ink, [shape[1], shape[2], shape[3]]).map_err(to_py)?;
    let src = images
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("images: cannot be read ({e})")))?;
    // Fails (rather than panics) on a read-only `out` or one that shares `images`' memory.
    let mut dst = out.try_readwrite().map_err(|e| {
        PyValueError::new_err(format!(
            "out: must be a writeable array not sharing memory with images ({e})"
        ))
    })?;
    let (src, dst) = (src.as_slice()?, dst.as_slice_mut()?);
    run_detached(py, || corruption.corrupt_batch(src, dst, seed, index))
}

/// What each corruption does, in the order of `CORRUPTIONS`: dicts with its `name`,
/// `family`, the `parameter` its severity sets, that parameter's five `values` (severities 1
/// to 5; lengths for 28x28 images) and a one-line `description`.
#[pyfunction]
fn corruption_info(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
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
}

/// `v` as the f64 of its shortest decimal (0.08, not 0.0799999982...), the number the
/// constant was written as.
fn shortest_f64(v: f32) -> f64 {
    v.to_string().parse().expect("a float's decimal parses")
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(corrupt_into, m)?)?;
    m.add_function(wrap_pyfunction!(corruption_info, m)?)?;
    m.add("CORRUPTIONS", PyTuple::new(m.py(), NAMES)?)?;
    Ok(())
}
