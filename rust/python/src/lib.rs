//! `metarobust._core`: conversion between numpy buffers and metarobust-core, argument
//! checks, GIL release and error mapping. No algorithms live here.
//!
//! Every entry point runs its body through [`guard`] under its Python name, so that a panic
//! (in conversion code with the GIL held, or in a kernel with it released) reaches Python as
//! a RuntimeError naming the function, not as pyo3's PanicException, a BaseException that
//! `except Exception` lets through. Bad arguments are ValueErrors and TypeErrors that start
//! with the argument's name: scalars are converted by `args`, arrays checked, borrowed and
//! allocated by `arrays`.

// Python signatures decide argument counts here, and numpy views make long tuple types.
#![allow(clippy::too_many_arguments, clippy::type_complexity)]

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::args::{given, Given};

mod args;
mod arrays;
mod conv_block;
mod corruptions;
mod features;
mod glyphs;
mod kernels;
mod sampler;
mod variable;

/// Maps a core error to ValueError, TypeError or MemoryError.
pub(crate) fn to_py(e: metarobust_core::Error) -> PyErr {
    match e {
        metarobust_core::Error::Value(m) => PyValueError::new_err(m),
        metarobust_core::Error::Type(m) => PyTypeError::new_err(m),
        metarobust_core::Error::Memory(m) => PyMemoryError::new_err(m),
    }
}

/// The body `f` of the entry point `name` (as Python names it, e.g. "prototypes" or
/// "SamplerCore.fill"), with any panic turned into a RuntimeError naming that function.
pub(crate) fn guard<T>(name: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(internal_error(name, p.as_ref())))
}

fn internal_error(name: &str, payload: &(dyn Any + Send)) -> PyErr {
    if let Some(refused) = payload.downcast_ref::<metarobust_core::memory::ScratchRefused>() {
        return PyMemoryError::new_err(format!(
            "images: too large for this machine: a corruption's scratch buffer of {} bytes \
             could not be allocated (in metarobust._core.{name})",
            refused.bytes
        ));
    }
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    PyRuntimeError::new_err(format!("internal error in metarobust._core.{name}: {msg}"))
}

/// Runs `f` with the GIL released. A panic in `f` unwinds to the caller's [`guard`] (pyo3
/// takes the GIL back on the way).
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> metarobust_core::Result<T> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(to_py)
}

/// Threads in the pool used by this process (follows RAYON_NUM_THREADS).
#[pyfunction]
fn num_threads() -> PyResult<usize> {
    guard("num_threads", || Ok(metarobust_core::pool::num_threads()))
}

/// For tests only, not part of the API: panics with `message` (with the GIL released when
/// `detached`), to check that a panic reaches Python as a RuntimeError naming the function.
#[pyfunction]
#[pyo3(
    signature = (message, detached = Given(None)),
    text_signature = "(message, detached=False)"
)]
fn _panic_for_tests(
    py: Python<'_>,
    message: &Bound<'_, PyAny>,
    #[pyo3(from_py_with = given)] detached: Given<'_>,
) -> PyResult<()> {
    guard("_panic_for_tests", || {
        let message = args::string(message, "message")?;
        if detached.get("detached", args::boolean, false)? {
            run_detached(py, || -> metarobust_core::Result<()> {
                panic!("{message}")
            })
        } else {
            panic!("{message}")
        }
    })
}

/// Keeps the panic hook from reporting a refused scratch allocation (an expected
/// MemoryError, not a bug): the default hook prints it to stderr, and with backtraces on it
/// would need memory right when there is none. Other panics go to the hook as before.
fn quiet_scratch_refusals() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .payload()
            .downcast_ref::<metarobust_core::memory::ScratchRefused>()
            .is_none()
        {
            previous(info)
        }
    }));
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    quiet_scratch_refusals();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    sampler::register(m)?;
    variable::register(m)?;
    features::register(m)?;
    kernels::register(m)?;
    glyphs::register(m)?;
    corruptions::register(m)?;
    conv_block::register(m)?;
    Ok(())
}
