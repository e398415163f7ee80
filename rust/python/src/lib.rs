//! `metarobust._core`: conversion between numpy buffers and metarobust-core, argument
//! checks, GIL release and error mapping. No algorithms live here.

// Python signatures decide argument counts here, and numpy views make long tuple types.
#![allow(clippy::too_many_arguments, clippy::type_complexity)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

mod arrays;
mod conv_block;
mod corruptions;
mod glyphs;
mod kernels;
mod sampler;

/// Maps a core error to ValueError, TypeError or MemoryError.
pub(crate) fn to_py(e: metarobust_core::Error) -> PyErr {
    match e {
        metarobust_core::Error::Value(m) => PyValueError::new_err(m),
        metarobust_core::Error::Type(m) => PyTypeError::new_err(m),
        metarobust_core::Error::Memory(m) => PyMemoryError::new_err(m),
    }
}

/// Runs `f` with the GIL released; a panic becomes a RuntimeError instead of crossing over.
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> metarobust_core::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            PyRuntimeError::new_err(format!("internal error in metarobust._core: {msg}"))
        })?
        .map_err(to_py)
}

/// Threads in the pool used by this process (follows RAYON_NUM_THREADS).
#[pyfunction]
fn num_threads() -> usize {
    metarobust_core::pool::num_threads()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    sampler::register(m)?;
    kernels::register(m)?;
    glyphs::register(m)?;
    corruptions::register(m)?;
    conv_block::register(m)?;
    Ok(())
}
