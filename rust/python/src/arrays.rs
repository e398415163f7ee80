//! Numpy arrays in and out, with errors naming the argument.
//!
//! In: [`checked`] views (dtype, dimensions, C order, alignment), borrowed through
//! rust-numpy's fallible [`read`] and [`write`] (its `readonly()` and `readwrite()` panic on
//! a read-only or aliased array), after [`disjoint`] has named any output that shares
//! memory with another argument. Out: [`new_array`] checks the size before allocating and
//! turns numpy's failure into an error (rust-numpy's constructors panic on it).

use metarobust_core::memory;
use numpy::ndarray::{Dim, Dimension, Ix};
use numpy::npyffi::{self, npy_intp, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{
    Element, PyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArray,
    PyReadwriteArray, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::to_py;

/// The numpy array `obj` as `PyArrayDyn<T>` with `ndim` dimensions, C-contiguous, aligned.
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
    if !arr.is_aligned() {
        return Err(PyValueError::new_err(format!(
            "{name}: its data is not aligned for {dtype} (a view at an odd byte offset); \
             pass a copy (array.copy())"
        )));
    }
    Ok(arr.clone())
}

/// A shared borrow of `a`, the argument `name`.
pub(crate) fn read<'py, T: Element, D: Dimension>(
    a: &Bound<'py, PyArray<T, D>>,
    name: &str,
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    a.try_readonly().map_err(|e| {
        PyValueError::new_err(format!(
            "{name}: cannot be read while it is being written ({e})"
        ))
    })
}

/// An exclusive borrow of the output `a`, the argument `name`.
pub(crate) fn write<'py, T: Element, D: Dimension>(
    a: &Bound<'py, PyArray<T, D>>,
    name: &str,
) -> PyResult<PyReadwriteArray<'py, T, D>> {
    // SAFETY: `a` is a live numpy array; its flags field is read, not changed.
    let flags = unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(a.as_array_ptr())).flags };
    let writeable = flags & NPY_ARRAY_WRITEABLE != 0;
    if !writeable {
        return Err(PyValueError::new_err(format!(
            "{name}: is read-only (its WRITEABLE flag is off); pass a writeable array"
        )));
    }
    a.try_readwrite().map_err(|e| {
        PyValueError::new_err(format!(
            "{name}: shares memory with an array in use, and cannot be written ({e})"
        ))
    })
}

/// The elements of a borrowed array.
pub(crate) fn slice<'a, T: Element, D: Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// The elements of a borrowed output.
pub(crate) fn slice_mut<'a, T: Element, D: Dimension>(
    a: &'a mut PyReadwriteArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
}

/// The bytes an argument's array covers (C-contiguous arrays cover one range).
#[derive(Clone, Copy)]
pub(crate) struct Span<'a> {
    pub name: &'a str,
    start: usize,
    end: usize,
}

pub(crate) fn span<'a, T: Element>(a: &Bound<'_, PyArrayDyn<T>>, name: &'a str) -> Span<'a> {
    let start = a.data() as usize;
    Span {
        name,
        start,
        end: start + a.len() * std::mem::size_of::<T>(),
    }
}

/// Names an output that shares memory with another output or an input: the same array
/// twice, or overlapping views.
pub(crate) fn disjoint(outputs: &[Span<'_>], inputs: &[Span<'_>]) -> PyResult<()> {
    for (i, out) in outputs.iter().enumerate() {
        for other in outputs[i + 1..].iter().chain(inputs) {
            let empty = out.start == out.end || other.start == other.end;
            if empty || out.end <= other.start || other.end <= out.start {
                continue;
            }
            let how = if (out.start, out.end) == (other.start, other.end) {
                "is the same array as"
            } else {
                "overlaps"
            };
            return Err(PyValueError::new_err(format!(
                "{}: {how} {} (outputs need memory of their own)",
                out.name, other.name
            )));
        }
    }
    Ok(())
}

/// A new C-ordered array of shape `dims` for the output `name`, zero-filled when `zeroed`
/// (else uninitialised: the caller writes every element before Python can see it). Sizes
/// beyond any array or beyond the machine's memory are refused before allocating; numpy's
/// own failure becomes an error naming `name`.
pub(crate) fn new_array<'py, T: Element, const N: usize>(
    py: Python<'py>,
    dims: [usize; N],
    name: &str,
    zeroed: bool,
) -> PyResult<Bound<'py, PyArray<T, Dim<[Ix; N]>>>> {
    // numpy refuses shapes whose non-zero sizes overflow, even with a zero among them.
    let nbytes = memory::bytes_of::<T>(&dims.map(|d| d.max(1)), name).map_err(to_py)?;
    let empty = dims.contains(&0) && nbytes <= isize::MAX as usize;
    memory::check_bytes(if empty { 0 } else { nbytes }, name).map_err(to_py)?;
    let mut shape = [0 as npy_intp; N];
    for (s, &d) in shape.iter_mut().zip(&dims) {
        *s = d as npy_intp; // each size is at most the checked byte count
    }
    let descr = T::get_dtype(py).into_dtype_ptr();
    // SAFETY: numpy's C API with a valid dtype (whose reference it takes) and a shape of N
    // sizes; it returns a new reference, or null with a Python error set.
    let ptr = unsafe {
        if zeroed {
            PY_ARRAY_API.PyArray_Zeros(py, N as i32, shape.as_mut_ptr(), descr, 0)
        } else {
            let subtype = npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type);
            PY_ARRAY_API.PyArray_NewFromDescr(
                py,
                subtype,
                descr,
                N as i32,
                shape.as_mut_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            )
        }
    };
    // SAFETY: `ptr` is a new reference to a numpy array of T and N dimensions, or null.
    let any = unsafe { Bound::from_owned_ptr_or_err(py, ptr) }.map_err(|e| {
        let msg = format!("{name}: cannot allocate an array of shape {dims:?}: {e}");
        if e.is_instance_of::<PyMemoryError>(py) {
            PyMemoryError::new_err(msg)
        } else {
            PyValueError::new_err(msg)
        }
    })?;
    // SAFETY: numpy made an array of dtype T with N dimensions.
    Ok(unsafe { any.cast_into_unchecked() })
}
