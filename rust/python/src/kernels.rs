//! Prototype and distance kernels over 3-D float32/float64 numpy arrays.
//!
//! Each entry point checks the shapes against each other (and `ways` against the support
//! items: every class needs one) before it allocates its outputs, so that no output is
//! larger than its inputs imply.

use metarobust_core::distances::{self, Dims, EpisodeDims, Metric, Real};
use metarobust_core::prototypes::{self as protos_core, Method, Shape};
use numpy::{Element, PyArray3, PyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::args::{self, given, Given};
use crate::arrays::{checked, new_array, read, slice, slice_mut, write};
use crate::{guard, run_detached, to_py};

/// The dtypes the kernels take (`float_kind` has picked one before the arrays are checked).
const FLOATS: &str = "float32 or float64";

fn metric(name: &str) -> PyResult<Metric> {
    match name {
        "sqeuclidean" => Ok(Metric::SqEuclidean),
        "cosine" => Ok(Metric::Cosine),
        other => Err(PyValueError::new_err(format!(
            "metric: expected 'sqeuclidean' or 'cosine', got {other:?}"
        ))),
    }
}

fn metric_arg(metric: &Given<'_>) -> PyResult<Metric> {
    self::metric(&metric.get("metric", args::string, "sqeuclidean".into())?)
}

fn method(name: &str, trim: f64, tol: f64, max_iter: usize) -> PyResult<Method> {
    // Every option is checked whatever the method, as metarobust.ops.prototypes does: a
    // bad value is an error even where this method would not read it.
    Method::TrimmedMean { trim }.check().map_err(to_py)?;
    Method::GeometricMedian { tol, max_iter }
        .check()
        .map_err(to_py)?;
    let m = match name {
        "mean" => Method::Mean,
        "median" => Method::Median,
        "trimmed_mean" => Method::TrimmedMean { trim },
        "geometric_median" => Method::GeometricMedian { tol, max_iter },
        other => {
            return Err(PyValueError::new_err(format!(
                "method: expected 'mean', 'median', 'trimmed_mean' or 'geometric_median', got {other:?}"
            )))
        }
    };
    m.check().map_err(to_py)?;
    Ok(m)
}

/// Whether `obj` holds float64 (true) or float32 (false); TypeError for anything else.
fn float_kind(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    if obj.cast::<PyArrayDyn<f32>>().is_ok() {
        return Ok(false);
    }
    if obj.cast::<PyArrayDyn<f64>>().is_ok() {
        return Ok(true);
    }
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
        let got = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!("{name}: expected a numpy array, got {got}"))
    })?;
    Err(PyTypeError::new_err(format!(
        "{name}: expected dtype float32 or float64, got {}",
        arr.dtype()
    )))
}

fn same_kind(objs: &[(&Bound<'_, PyAny>, &str)]) -> PyResult<bool> {
    let first = float_kind(objs[0].0, objs[0].1)?;
    for (o, n) in &objs[1..] {
        if float_kind(o, n)? != first {
            return Err(PyTypeError::new_err(format!(
                "{n}: dtype differs from {} (both must be float32 or both float64)",
                objs[0].1
            )));
        }
    }
    Ok(first)
}

fn dims3<T: Element>(a: &Bound<'_, PyArrayDyn<T>>) -> (usize, usize, usize) {
    let s = a.shape();
    (s[0], s[1], s[2])
}

/// An output array for a kernel that writes every element before it is returned (each
/// kernel here does; on error the array is dropped unseen). Skipping the zero fill matters:
/// for outputs of a few hundred KiB it costs as much as an episode-sized kernel.
fn new3<'py, T: Element>(
    py: Python<'py>,
    shape: (usize, usize, usize),
    name: &str,
) -> PyResult<Bound<'py, PyArray3<T>>> {
    new_array::<T, 3>(py, [shape.0, shape.1, shape.2], name, false)
}

/// `labels (tasks, items)`; `items_name` is the argument that sets `items`.
fn labels2<'py>(
    obj: &Bound<'py, PyAny>,
    tasks: usize,
    items: usize,
    items_name: &str,
) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
    let l = checked::<i64>(obj, "labels", "int64", 2)?;
    if l.shape() != [tasks, items] {
        return Err(PyValueError::new_err(format!(
            "labels: expected shape ({tasks}, {items}) to match {items_name}, got {:?}",
            l.shape()
        )));
    }
    Ok(l)
}

/// `(tasks, items, dim)` of the argument `name` without a zero: checked before `ways`, whose
/// check would otherwise report the empty array as too few support items.
fn non_empty(shape: (usize, usize, usize), name: &str) -> PyResult<()> {
    let (tasks, items, dim) = shape;
    if [tasks, items, dim].contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{name}: needs a non-empty (tasks, items, dim) shape, got ({tasks}, {items}, {dim})"
        )));
    }
    Ok(())
}

/// Every class needs a support item: `ways` above the support items is refused before
/// anything of size `ways` is allocated.
fn check_ways(ways: usize, support: usize, support_name: &str) -> PyResult<()> {
    if ways > support {
        return Err(PyValueError::new_err(format!(
            "ways: {ways} classes need at least {ways} support items per task, {support_name} \
             has {support}"
        )));
    }
    Ok(())
}

fn prototypes_t<'py, F: Real + Element>(
    py: Python<'py>,
    emb: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    ways: usize,
    m: Method,
) -> PyResult<Bound<'py, PyAny>> {
    let e = checked::<F>(emb, "emb", FLOATS, 3)?;
    let (tasks, support, dim) = dims3(&e);
    let l = labels2(labels, tasks, support, "emb")?;
    non_empty((tasks, support, dim), "emb")?;
    check_ways(ways, support, "emb")?;
    let out = new3::<F>(py, (tasks, ways, dim), "ways")?;
    {
        let (er, lr, mut ow) = (read(&e, "emb")?, read(&l, "labels")?, write(&out, "out")?);
        let (es, ls, os) = (
            slice(&er, "emb")?,
            slice(&lr, "labels")?,
            slice_mut(&mut ow, "out")?,
        );
        let shape = Shape {
            tasks,
            support,
            dim,
            ways,
        };
        run_detached(py, || protos_core::prototypes(es, ls, shape, m, os))?;
    }
    Ok(out.into_any())
}

/// Prototypes `(B, ways, D)` of `emb (B, S, D)` with `labels (B, S)`.
#[pyfunction]
#[pyo3(
    signature = (emb, labels, ways, method=Given(None), trim=Given(None), tol=Given(None), max_iter=Given(None)),
    text_signature = "(emb, labels, ways, method='mean', trim=0.2, tol=1e-06, max_iter=100)"
)]
fn prototypes<'py>(
    py: Python<'py>,
    emb: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    ways: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = given)] method: Given<'py>,
    #[pyo3(from_py_with = given)] trim: Given<'py>,
    #[pyo3(from_py_with = given)] tol: Given<'py>,
    #[pyo3(from_py_with = given)] max_iter: Given<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("prototypes", || {
        let ways = args::positive(ways, "ways")?;
        let m = self::method(
            &method.get("method", args::string, "mean".into())?,
            trim.get("trim", args::float, 0.2)?,
            tol.get("tol", args::float, 1e-6)?,
            max_iter.get("max_iter", args::positive, 100)?,
        )?;
        if float_kind(emb, "emb")? {
            prototypes_t::<f64>(py, emb, labels, ways, m)
        } else {
            prototypes_t::<f32>(py, emb, labels, ways, m)
        }
    })
}

fn mean_backward_t<'py, F: Real + Element>(
    py: Python<'py>,
    grad: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    support: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let g = checked::<F>(grad, "grad_output", FLOATS, 3)?;
    let (tasks, ways, dim) = dims3(&g);
    let l = checked::<i64>(labels, "labels", "int64", 2)?;
    if l.shape()[0] != tasks {
        return Err(PyValueError::new_err(format!(
            "labels: expected {tasks} rows (grad_output's tasks), got shape {:?}",
            l.shape()
        )));
    }
    if l.shape()[1] != support {
        return Err(PyValueError::new_err(format!(
            "support: must equal the items per task of labels (shape {:?}), got {support}",
            l.shape()
        )));
    }
    let out = new3::<F>(py, (tasks, support, dim), "support")?;
    {
        let (gr, lr, mut ow) = (
            read(&g, "grad_output")?,
            read(&l, "labels")?,
            write(&out, "out")?,
        );
        let (gs, ls) = (slice(&gr, "grad_output")?, slice(&lr, "labels")?);
        let os = slice_mut(&mut ow, "out")?;
        let shape = Shape {
            tasks,
            support,
            dim,
            ways,
        };
        run_detached(py, || protos_core::mean_backward(gs, ls, shape, os))?;
    }
    Ok(out.into_any())
}

/// Gradient of mean prototypes: `grad_output (B, ways, D)` to `(B, support, D)`.
#[pyfunction]
fn mean_prototypes_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    support: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("mean_prototypes_backward", || {
        let support = args::positive(support, "support")?;
        if float_kind(grad_output, "grad_output")? {
            mean_backward_t::<f64>(py, grad_output, labels, support)
        } else {
            mean_backward_t::<f32>(py, grad_output, labels, support)
        }
    })
}

fn xy<'py, F: Real + Element>(
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyArrayDyn<F>>, Bound<'py, PyArrayDyn<F>>, Dims)> {
    let (xa, ya) = (
        checked::<F>(x, "x", FLOATS, 3)?,
        checked::<F>(y, "y", FLOATS, 3)?,
    );
    let ((b, q, d), (b2, n, d2)) = (dims3(&xa), dims3(&ya));
    if b != b2 || d != d2 {
        return Err(PyValueError::new_err(format!(
            "y: shape {:?} must agree with x's {:?} in batch and feature dimensions",
            ya.shape(),
            xa.shape()
        )));
    }
    Ok((xa, ya, Dims { tasks: b, q, n, d }))
}

fn pairwise_t<'py, F: Real + Element>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    m: Metric,
) -> PyResult<Bound<'py, PyAny>> {
    let (xa, ya, dims) = xy::<F>(x, y)?;
    let out = new3::<F>(py, (dims.tasks, dims.q, dims.n), "x, y")?;
    {
        let (xr, yr, mut ow) = (read(&xa, "x")?, read(&ya, "y")?, write(&out, "out")?);
        let (xs, ys, os) = (
            slice(&xr, "x")?,
            slice(&yr, "y")?,
            slice_mut(&mut ow, "out")?,
        );
        run_detached(py, || distances::pairwise(xs, ys, dims, m, os))?;
    }
    Ok(out.into_any())
}

/// Distances `(B, Q, N)` between `x (B, Q, D)` and `y (B, N, D)`.
#[pyfunction]
#[pyo3(
    signature = (x, y, metric=Given(None)),
    text_signature = "(x, y, metric='sqeuclidean')"
)]
fn pairwise_distances<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = given)] metric: Given<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("pairwise_distances", || {
        let m = metric_arg(&metric)?;
        if same_kind(&[(x, "x"), (y, "y")])? {
            pairwise_t::<f64>(py, x, y, m)
        } else {
            pairwise_t::<f32>(py, x, y, m)
        }
    })
}

type Pair<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

fn pairwise_backward_t<'py, F: Real + Element>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    m: Metric,
) -> PyResult<Pair<'py>> {
    let (xa, ya, dims) = xy::<F>(x, y)?;
    let g = checked::<F>(grad, "grad_output", FLOATS, 3)?;
    if g.shape() != [dims.tasks, dims.q, dims.n] {
        return Err(PyValueError::new_err(format!(
            "grad_output: expected shape ({}, {}, {}), got {:?}",
            dims.tasks,
            dims.q,
            dims.n,
            g.shape()
        )));
    }
    let gx = new3::<F>(py, (dims.tasks, dims.q, dims.d), "x")?;
    let gy = new3::<F>(py, (dims.tasks, dims.n, dims.d), "y")?;
    {
        let (xr, yr, gr) = (read(&xa, "x")?, read(&ya, "y")?, read(&g, "grad_output")?);
        let (mut gxw, mut gyw) = (write(&gx, "out")?, write(&gy, "out")?);
        let (xs, ys, gs) = (
            slice(&xr, "x")?,
            slice(&yr, "y")?,
            slice(&gr, "grad_output")?,
        );
        let (gxs, gys) = (slice_mut(&mut gxw, "out")?, slice_mut(&mut gyw, "out")?);
        run_detached(py, || {
            distances::pairwise_backward(xs, ys, gs, dims, m, gxs, gys)
        })?;
    }
    Ok((gx.into_any(), gy.into_any()))
}

/// Gradients of `pairwise_distances` for `x` and `y`.
#[pyfunction]
#[pyo3(
    signature = (x, y, grad_output, metric=Given(None)),
    text_signature = "(x, y, grad_output, metric='sqeuclidean')"
)]
fn pairwise_distances_backward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    grad_output: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = given)] metric: Given<'py>,
) -> PyResult<Pair<'py>> {
    guard("pairwise_distances_backward", || {
        let m = metric_arg(&metric)?;
        if same_kind(&[(x, "x"), (y, "y"), (grad_output, "grad_output")])? {
            pairwise_backward_t::<f64>(py, x, y, grad_output, m)
        } else {
            pairwise_backward_t::<f32>(py, x, y, grad_output, m)
        }
    })
}

type EpisodeArrays<'py, F> = (
    Bound<'py, PyArrayDyn<F>>,
    Bound<'py, PyArrayDyn<i64>>,
    Bound<'py, PyArrayDyn<F>>,
    EpisodeDims,
);

fn episode<'py, F: Real + Element>(
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    ways: usize,
) -> PyResult<EpisodeArrays<'py, F>> {
    let (s, q) = (
        checked::<F>(support, "support", FLOATS, 3)?,
        checked::<F>(query, "query", FLOATS, 3)?,
    );
    let ((b, ns, d), (b2, nq, d2)) = (dims3(&s), dims3(&q));
    if b != b2 || d != d2 {
        return Err(PyValueError::new_err(format!(
            "query: shape {:?} must agree with support's {:?} in batch and feature dimensions",
            q.shape(),
            s.shape()
        )));
    }
    let l = labels2(labels, b, ns, "support")?;
    non_empty((b, ns, d), "support")?;
    non_empty((b2, nq, d2), "query")?;
    check_ways(ways, ns, "support")?;
    let dims = EpisodeDims {
        tasks: b,
        support: ns,
        query: nq,
        dim: d,
        ways,
    };
    Ok((s, l, q, dims))
}

fn proto_distances_t<'py, F: Real + Element>(
    py: Python<'py>,
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    ways: usize,
    m: Metric,
) -> PyResult<Pair<'py>> {
    let (s, l, q, dims) = episode::<F>(support, labels, query, ways)?;
    let out = new3::<F>(py, (dims.tasks, dims.query, ways), "ways")?;
    let protos = new3::<F>(py, (dims.tasks, ways, dims.dim), "ways")?;
    {
        let (sr, lr, qr) = (
            read(&s, "support")?,
            read(&l, "labels")?,
            read(&q, "query")?,
        );
        let (mut ow, mut pw) = (write(&out, "out")?, write(&protos, "out")?);
        let (ss, ls) = (slice(&sr, "support")?, slice(&lr, "labels")?);
        let qs = slice(&qr, "query")?;
        let (os, ps) = (slice_mut(&mut ow, "out")?, slice_mut(&mut pw, "out")?);
        run_detached(py, || {
            distances::proto_distances(ss, ls, qs, dims, m, os, ps)
        })?;
    }
    Ok((out.into_any(), protos.into_any()))
}

/// Fused mean prototypes + distances: returns `(distances (B, Q, ways), prototypes (B, ways, D))`.
#[pyfunction]
#[pyo3(
    signature = (support, labels, query, ways, metric=Given(None)),
    text_signature = "(support, labels, query, ways, metric='sqeuclidean')"
)]
fn proto_distances<'py>(
    py: Python<'py>,
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    ways: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = given)] metric: Given<'py>,
) -> PyResult<Pair<'py>> {
    guard("proto_distances", || {
        let (ways, m) = (args::positive(ways, "ways")?, metric_arg(&metric)?);
        if same_kind(&[(support, "support"), (query, "query")])? {
            proto_distances_t::<f64>(py, support, labels, query, ways, m)
        } else {
            proto_distances_t::<f32>(py, support, labels, query, ways, m)
        }
    })
}

fn proto_distances_backward_t<'py, F: Real + Element>(
    py: Python<'py>,
    [support, labels, query, protos, grad]: [&Bound<'py, PyAny>; 5],
    ways: usize,
    m: Metric,
) -> PyResult<Pair<'py>> {
    let (s, l, q, dims) = episode::<F>(support, labels, query, ways)?;
    let p = checked::<F>(protos, "protos", FLOATS, 3)?;
    let g = checked::<F>(grad, "grad_output", FLOATS, 3)?;
    let (tasks, nq, d) = (dims.tasks, dims.query, dims.dim);
    if p.shape() != [tasks, ways, d] {
        return Err(PyValueError::new_err(format!(
            "protos: expected shape ({tasks}, {ways}, {d}), got {:?}",
            p.shape()
        )));
    }
    if g.shape() != [tasks, nq, ways] {
        return Err(PyValueError::new_err(format!(
            "grad_output: expected shape ({tasks}, {nq}, {ways}), got {:?}",
            g.shape()
        )));
    }
    let gs = new3::<F>(py, (tasks, dims.support, d), "support")?;
    let gq = new3::<F>(py, (tasks, nq, d), "query")?;
    {
        let (sr, lr, qr) = (
            read(&s, "support")?,
            read(&l, "labels")?,
            read(&q, "query")?,
        );
        let (pr, gr) = (read(&p, "protos")?, read(&g, "grad_output")?);
        let (mut gsw, mut gqw) = (write(&gs, "out")?, write(&gq, "out")?);
        let (ss, ls, qs) = (
            slice(&sr, "support")?,
            slice(&lr, "labels")?,
            slice(&qr, "query")?,
        );
        let (ps, grs) = (slice(&pr, "protos")?, slice(&gr, "grad_output")?);
        let (gss, gqs) = (slice_mut(&mut gsw, "out")?, slice_mut(&mut gqw, "out")?);
        run_detached(py, || {
            distances::proto_distances_backward(ss, ls, qs, ps, grs, dims, m, gss, gqs)
        })?;
    }
    Ok((gs.into_any(), gq.into_any()))
}

/// Backward of `proto_distances`: returns `(grad_support, grad_query)`.
#[pyfunction]
#[pyo3(
    signature = (support, labels, query, protos, grad_output, ways, metric=Given(None)),
    text_signature = "(support, labels, query, protos, grad_output, ways, metric='sqeuclidean')"
)]
fn proto_distances_backward<'py>(
    py: Python<'py>,
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    protos: &Bound<'py, PyAny>,
    grad_output: &Bound<'py, PyAny>,
    ways: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = given)] metric: Given<'py>,
) -> PyResult<Pair<'py>> {
    guard("proto_distances_backward", || {
        let (ways, m) = (args::positive(ways, "ways")?, metric_arg(&metric)?);
        let arrays = [support, labels, query, protos, grad_output];
        if same_kind(&[
            (support, "support"),
            (query, "query"),
            (protos, "protos"),
            (grad_output, "grad_output"),
        ])? {
            proto_distances_backward_t::<f64>(py, arrays, ways, m)
        } else {
            proto_distances_backward_t::<f32>(py, arrays, ways, m)
        }
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prototypes, m)?)?;
    m.add_function(wrap_pyfunction!(mean_prototypes_backward, m)?)?;
    m.add_function(wrap_pyfunction!(pairwise_distances, m)?)?;
    m.add_function(wrap_pyfunction!(pairwise_distances_backward, m)?)?;
    m.add_function(wrap_pyfunction!(proto_distances, m)?)?;
    m.add_function(wrap_pyfunction!(proto_distances_backward, m)?)?;
    Ok(())
}
