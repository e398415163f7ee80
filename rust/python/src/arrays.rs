//! Checked views of numpy arrays: dtype, dimensions and C order, with errors naming the argument.

use numpy::{Element, PyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// The numpy array `obj` as `PyArrayDyn<T>` with `ndim` dimensions, C-contiguous.
pub(crate) fn checked<'py, T: Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    dtype: &str,
    ndim: usize,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let untyped = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected a numpy array, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let arr = untyped.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected dtype {dtype}, got {}",
            untyped.dtype()
        ))
    })?;
    if arr.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name}: expected {ndim} dimensions, got shape {:?}",
            arr.shape()
        )));
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name}: must be C-contiguous (got a strided or Fortran-ordered array; \
             use numpy.ascontiguousarray)"
        )));
    }
    Ok(arr.clone())
}

/// A positive size argument given as a Python int.
pub(crate) fn positive(value: i64, name: &str) -> PyResult<usize> {
    if value < 1 {
        return Err(PyValueError::new_err(format!(
            "{name}: must be >= 1, got {value}"
        )));
    }
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name}: too large ({value})")))
}

/// A non-negative size argument given as a Python int.
pub(crate) fn non_negative(value: i64, name: &str) -> PyResult<usize> {
    if value < 0 {
        return Err(PyValueError::new_err(format!(
            "{name}: must be >= 0, got {value}"
        )));
    }
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name}: too large ({value})")))
}
