//! The procedural glyph dataset: argument checks and a fresh numpy output, filled by
//! metarobust-core with the GIL released.

use metarobust_core::glyphs::{self, Split};
use numpy::{PyArray4, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{checked, positive};
use crate::{run_detached, to_py};

/// Renders `per_class` instances of each class id in `classes` (int64, 1-D, non-negative)
/// as a new uint8 array `(len(classes) * per_class, 1, image_size, image_size)`, class-major:
/// dark ink (towards 0) on a light background (255). A pure function of
/// `(seed, class, instance)`, whatever the batch or thread count.
#[pyfunction]
#[pyo3(signature = (seed, classes, per_class, image_size))]
fn render_glyphs<'py>(
    py: Python<'py>,
    seed: u64,
    classes: &Bound<'py, PyAny>,
    per_class: i64,
    image_size: i64,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    let classes = checked::<i64>(classes, "classes", "int64", 1)?;
    let per_class = positive(per_class, "per_class")?;
    let size = positive(image_size, "image_size")?;
    let ids: Vec<u64> = {
        let ro = classes.readonly();
        ro.as_slice()?
            .iter()
            .map(|&c| {
                u64::try_from(c).map_err(|_| {
                    PyValueError::new_err(format!("classes: ids must be >= 0, got {c}"))
                })
            })
            .collect::<PyResult<_>>()?
    };
    glyphs::output_len(ids.len(), per_class, size).map_err(to_py)?;
    let out = PyArray4::<u8>::zeros(py, [ids.len() * per_class, 1, size, size], false);
    {
        let mut rw = out.readwrite();
        let buf = rw.as_slice_mut()?;
        run_detached(py, || glyphs::render(seed, &ids, per_class, size, buf))?;
    }
    Ok(out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(render_glyphs, m)?)?;
    // First class id of each split; a split holds at most GLYPH_SPLIT_STRIDE classes.
    let offsets = PyDict::new(m.py());
    for (name, split) in [
        ("train", Split::Train),
        ("val", Split::Val),
        ("test", Split::Test),
    ] {
        offsets.set_item(name, split.offset())?;
    }
    m.add("GLYPH_SPLIT_OFFSETS", offsets)?;
    m.add("GLYPH_SPLIT_STRIDE", glyphs::SPLIT_STRIDE)?;
    m.add("GLYPH_MIN_SIZE", glyphs::MIN_SIZE)?;
    m.add("GLYPH_MAX_SIZE", glyphs::MAX_SIZE)?;
    Ok(())
}
