//! Image corruptions on numpy arrays: dtype dispatch, checks, GIL release.

use metarobust_core::corruptions::{Corruption, NAMES};
use metarobust_core::pixel::Pixel;
use numpy::{Element, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

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

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(corrupt_into, m)?)?;
    m.add("CORRUPTIONS", PyTuple::new(m.py(), NAMES)?)?;
    Ok(())
}
