//! The procedural glyph dataset: argument checks and a fresh numpy output (its size checked,
//! its allocation fallible), filled by metarobust-core with the GIL released.

use metarobust_core::glyphs::{self, Split};
use metarobust_core::memory::try_vec_with_capacity;
use numpy::{PyArray4, PyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::args;
use crate::arrays::{checked, new_array, read, slice, slice_mut, write};
use crate::{guard, run_detached, to_py};

/// Renders `per_class` instances of each class id in `classes` (int64, 1-D, non-negative)
/// as a new uint8 array `(len(classes) * per_class, 1, image_size, image_size)`, class-major:
/// dark ink (towards 0) on a light background (255). A pure function of
/// `(seed, class, instance)`, whatever the batch or thread count.
#[pyfunction]
#[pyo3(signature = (seed, classes, per_class, image_size))]
fn render_glyphs<'py>(
    py: Python<'py>,
    seed: &Bound<'py, PyAny>,
    classes: &Bound<'py, PyAny>,
    per_class: &Bound<'py, PyAny>,
    image_size: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray4<u8>>> {
    guard("render_glyphs", || {
        let seed = args::uint64(seed, "seed")?;
        let classes = checked::<i64>(classes, "classes", "int64", 1)?;
        let per_class = args::positive(per_class, "per_class")?;
        let size = args::positive(image_size, "image_size")?;
        let ids = class_ids(&classes)?;
        glyphs::output_len(ids.len(), per_class, size).map_err(to_py)?;
        // The size is checked (and the allocation fallible) before rendering starts.
        let out = new_array::<u8, 4>(
            py,
            [ids.len() * per_class, 1, size, size],
            "per_class",
            true,
        )?;
        {
            let mut rw = write(&out, "out")?;
            let buf = slice_mut(&mut rw, "out")?;
            run_detached(py, || glyphs::render(seed, &ids, per_class, size, buf))?;
        }
        Ok(out)
    })
}

/// The class ids of `classes`, each checked to be `>= 0`.
fn class_ids(classes: &Bound<'_, PyArrayDyn<i64>>) -> PyResult<Vec<u64>> {
    let ro = read(classes, "classes")?;
    let values = slice(&ro, "classes")?;
    let mut ids = try_vec_with_capacity(values.len(), "classes").map_err(to_py)?;
    for &c in values {
        ids.push(
            u64::try_from(c).map_err(|_| {
                PyValueError::new_err(format!("classes: ids must be >= 0, got {c}"))
            })?,
        );
    }
    Ok(ids)
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
