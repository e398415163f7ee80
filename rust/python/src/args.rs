//! Python scalars, strings and lists to Rust values, with errors that name the argument.
//!
//! The entry points take their arguments as Python objects and convert them here: pyo3's
//! own conversions raise OverflowError for a large int and TypeErrors that do not name the
//! argument, and turn a float beyond float32's range into inf without a word. Ints reject
//! bool (an int subclass that is almost always a mistake for a size or a seed).

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn not_bool(obj: &Bound<'_, PyAny>, name: &str, want: &str) -> PyResult<()> {
    if obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected {want}, got bool"
        )));
    }
    Ok(())
}

/// An int (or an object with `__index__`, as numpy integers) in `i64`'s range.
pub(crate) fn int(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    not_bool(obj, name, "an int")?;
    obj.extract::<i64>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            PyValueError::new_err(format!(
                "{name}: {} is out of range (at most {} in magnitude)",
                repr(obj),
                i64::MAX
            ))
        } else {
            PyTypeError::new_err(format!("{name}: expected an int, got {}", type_name(obj)))
        }
    })
}

/// An int `>= 1`, as a size.
pub(crate) fn positive(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    at_least(obj, name, 1)
}

/// An int `>= 0`, as a size.
pub(crate) fn non_negative(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    at_least(obj, name, 0)
}

fn at_least(obj: &Bound<'_, PyAny>, name: &str, low: i64) -> PyResult<usize> {
    let v = int(obj, name)?;
    if v < low {
        return Err(PyValueError::new_err(format!(
            "{name}: must be >= {low}, got {v}"
        )));
    }
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{name}: too large ({v})")))
}

/// An int in `0..2**64` (seeds, stream indices).
pub(crate) fn uint64(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    not_bool(obj, name, "an int")?;
    if let Ok(v) = obj.extract::<u64>() {
        return Ok(v);
    }
    let v = int(obj, name).map_err(|e| {
        if e.is_instance_of::<PyValueError>(obj.py()) {
            PyValueError::new_err(format!("{name}: must be in 0..2**64, got {}", repr(obj)))
        } else {
            e
        }
    })?;
    Err(PyValueError::new_err(format!(
        "{name}: must be in 0..2**64, got {v}"
    )))
}

/// A float (an int is taken as its value).
pub(crate) fn float(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    not_bool(obj, name, "a float")?;
    obj.extract::<f64>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            PyValueError::new_err(format!("{name}: {} is out of a float's range", repr(obj)))
        } else {
            PyTypeError::new_err(format!("{name}: expected a float, got {}", type_name(obj)))
        }
    })
}

/// `v` as a float32, rounded: a finite value must not overflow to inf (one too small for
/// float32 rounds towards 0 as any float32 rounding does; a divisor that becomes 0 is
/// refused by the check of its own range). NaN and inf stay as they are, for the kernels'
/// checks to name them.
fn to_f32(v: f64, name: &str) -> PyResult<f32> {
    let f = v as f32;
    if v.is_finite() && f.is_infinite() {
        return Err(PyValueError::new_err(format!(
            "{name}: {v:e} is outside float32's range (its magnitude must be at most {:e})",
            f32::MAX
        )));
    }
    Ok(f)
}

/// A float that the float32 kernels take as it is.
pub(crate) fn float32(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f32> {
    to_f32(float(obj, name)?, name)
}

/// A list (or tuple) of floats for float32 use, or None.
pub(crate) fn float32_list(
    obj: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<Option<Vec<f32>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let wrong = || {
        PyTypeError::new_err(format!(
            "{name}: expected a list of floats or None, got {}",
            type_name(obj)
        ))
    };
    if obj.is_instance_of::<PyString>() {
        return Err(wrong());
    }
    let values: Vec<f64> = obj.extract().map_err(|_| wrong())?;
    if values.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{name}: expected one value or one per channel, got an empty list"
        )));
    }
    let values = values.into_iter().map(|v| to_f32(v, name));
    Ok(Some(values.collect::<PyResult<_>>()?))
}

/// A str. Lone surrogates (text that is not valid Unicode) are refused.
pub(crate) fn string(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("{name}: expected a str, got {}", type_name(obj)))
    })?;
    s.to_str().map(str::to_owned).map_err(|_| {
        PyValueError::new_err(format!("{name}: {} is not valid Unicode text", repr(obj)))
    })
}

/// A bool (Python's or numpy's).
pub(crate) fn boolean(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    obj.extract::<bool>().map_err(|_| {
        PyTypeError::new_err(format!("{name}: expected a bool, got {}", type_name(obj)))
    })
}

/// An argument with a default, as given or left out. pyo3's `Option` parameters would take
/// an explicit None for the default; this one hands None to the conversion, which refuses
/// it. Built by [`given`], which only keeps the object: every conversion happens in the
/// entry point's body, under its [`guard`](crate::guard).
pub(crate) struct Given<'py>(pub Option<Bound<'py, PyAny>>);

/// For `#[pyo3(from_py_with = args::given)]` on parameters with a default `Given(None)`.
pub(crate) fn given<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Given<'py>> {
    Ok(Given(Some(obj.clone())))
}

impl<'py> Given<'py> {
    /// The argument `name` converted by `convert`, or `default` where it was left out.
    pub(crate) fn get<T>(
        &self,
        name: &str,
        convert: impl FnOnce(&Bound<'py, PyAny>, &str) -> PyResult<T>,
        default: T,
    ) -> PyResult<T> {
        match &self.0 {
            Some(obj) => convert(obj, name),
            None => Ok(default),
        }
    }
}
