//! Prototype and distance kernels over 3-D float32/float64 numpy arrays.

use metarobust_core::distances::{self, Dims, EpisodeDims, Metric, Real};
use metarobust_core::prototypes::{self as protos_core, Method, Shape};
use numpy::{Element, PyArray3, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::arrays::{checked, positive};
use crate::run_detached;

fn metric(name: &str) -> PyResult<Metric> {
    match name {
        "sqeuclidean" => Ok(Metric::SqEuclidean),
        "cosine" => Ok(Metric::Cosine),
        other => Err(PyValueError::new_err(format!(
            "metric: expected 'sqeuclidean' or 'cosine', got {other:?}"
        ))),
    }
}

fn method(name: &str, trim: f64, tol: f64, max_iter: i64) -> PyResult<Method> {
    let m = match name {
        "mean" => Method::Mean,
        "median" => Method::Median,
        "trimmed_mean" => Method::TrimmedMean { trim },
        "geometric_median" => Method::GeometricMedian { tol, max_iter: positive(max_iter, "max_iter")? },
        other => {
            return Err(PyValueError::new_err(format!(
                "method: expected 'mean', 'median', 'trimmed_mean' or 'geometric_median', got {other:?}"
            )))
        }
    };
    m.check().map_err(crate::to_py)?;
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
    let arr = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected a numpy array")))?;
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
fn new3<'py, T: Element>(py: Python<'py>, shape: (usize, usize, usize)) -> Bound<'py, PyArray3<T>> {
    // SAFETY: uninitialised floats are overwritten by the kernel before Python can read them.
    unsafe { PyArray3::<T>::new(py, [shape.0, shape.1, shape.2], false) }
}

fn labels2<'py>(
    obj: &Bound<'py, PyAny>,
    tasks: usize,
    items: usize,
) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
    let l = checked::<i64>(obj, "labels", "int64", 2)?;
    if l.shape() != [tasks, items] {
        return Err(PyValueError::new_err(format!(
            "labels: expected shape ({tasks}, {items}), got {:?}",
            l.shape()
        )));
    }
    Ok(l)
}

fn prototypes_t<'py, F: Real + Element>(
    py: Python<'py>,
    emb: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    ways: usize,
    m: Method,
) -> PyResult<Bound<'py, PyAny>> {
    let e = checked::<F>(emb, "emb", "float", 3)?;
    let (b, s, d) = dims3(&e);
    let l = labels2(labels, b, s)?;
    let out = new3::<F>(py, (b, ways, d));
    {
        let (e, l, mut o) = (e.readonly(), l.readonly(), out.readwrite());
        let (e, l, o) = (e.as_slice()?, l.as_slice()?, o.as_slice_mut()?);
        run_detached(py, || {
            protos_core::prototypes(
                e,
                l,
                Shape {
                    tasks: b,
                    support: s,
                    dim: d,
                    ways,
                },
                m,
                o,
            )
        })?;
    }
    Ok(out.into_any())
}

/// Prototypes `(B, ways, D)` of `emb (B, S, D)` with `labels (B, S)`.
#[pyfunction]
#[pyo3(signature = (emb, labels, ways, method="mean", trim=0.2, tol=1e-6, max_iter=100))]
fn prototypes<'py>(
    py: Python<'py>,
    emb: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    ways: i64,
    method: &str,
    trim: f64,
    tol: f64,
    max_iter: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let ways = positive(ways, "ways")?;
    let m = self::method(method, trim, tol, max_iter)?;
    if float_kind(emb, "emb")? {
        prototypes_t::<f64>(py, emb, labels, ways, m)
    } else {
        prototypes_t::<f32>(py, emb, labels, ways, m)
    }
}

fn mean_backward_t<'py, F: Real + Element>(
    py: Python<'py>,
    grad: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    support: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let g = checked::<F>(grad, "grad_output", "float", 3)?;
    let (b, ways, d) = dims3(&g);
    let l = labels2(labels, b, support)?;
    let out = new3::<F>(py, (b, support, d));
    {
        let (g, l, mut o) = (g.readonly(), l.readonly(), out.readwrite());
        let (g, l, o) = (g.as_slice()?, l.as_slice()?, o.as_slice_mut()?);
        run_detached(py, || {
            protos_core::mean_backward(
                g,
                l,
                Shape {
                    tasks: b,
                    support,
                    dim: d,
                    ways,
                },
                o,
            )
        })?;
    }
    Ok(out.into_any())
}

/// Gradient of mean prototypes: `grad_output (B, ways, D)` to `(B, support, D)`.
#[pyfunction]
fn mean_prototypes_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    support: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let support = positive(support, "support")?;
    if float_kind(grad_output, "grad_output")? {
        mean_backward_t::<f64>(py, grad_output, labels, support)
    } else {
        mean_backward_t::<f32>(py, grad_output, labels, support)
    }
}

fn xy<'py, F: Real + Element>(
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyArrayDyn<F>>, Bound<'py, PyArrayDyn<F>>, Dims)> {
    let (xa, ya) = (
        checked::<F>(x, "x", "float", 3)?,
        checked::<F>(y, "y", "float", 3)?,
    );
    let ((b, q, d), (b2, n, d2)) = (dims3(&xa), dims3(&ya));
    if b != b2 || d != d2 {
        return Err(PyValueError::new_err(format!(
            "x, y: shapes {:?} and {:?} must agree in batch and feature dimensions",
            xa.shape(),
            ya.shape()
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
    let out = new3::<F>(py, (dims.tasks, dims.q, dims.n));
    {
        let (xr, yr, mut o) = (xa.readonly(), ya.readonly(), out.readwrite());
        let (xs, ys, os) = (xr.as_slice()?, yr.as_slice()?, o.as_slice_mut()?);
        run_detached(py, || distances::pairwise(xs, ys, dims, m, os))?;
    }
    Ok(out.into_any())
}

/// Distances `(B, Q, N)` between `x (B, Q, D)` and `y (B, N, D)`.
#[pyfunction]
#[pyo3(signature = (x, y, metric="sqeuclidean"))]
fn pairwise_distances<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    metric: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let m = self::metric(metric)?;
    if same_kind(&[(x, "x"), (y, "y")])? {
        pairwise_t::<f64>(py, x, y, m)
    } else {
        pairwise_t::<f32>(py, x, y, m)
    }
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
    let g = checked::<F>(grad, "grad_output", "float", 3)?;
    if g.shape() != [dims.tasks, dims.q, dims.n] {
        return Err(PyValueError::new_err(format!(
            "grad_output: expected shape ({}, {}, {}), got {:?}",
            dims.tasks,
            dims.q,
            dims.n,
            g.shape()
        )));
    }
    let gx = new3::<F>(py, (dims.tasks, dims.q, dims.d));
    let gy = new3::<F>(py, (dims.tasks, dims.n, dims.d));
    {
        let (xr, yr, gr) = (xa.readonly(), ya.readonly(), g.readonly());
        let (mut gxw, mut gyw) = (gx.readwrite(), gy.readwrite());
        let (xs, ys, gs) = (xr.as_slice()?, yr.as_slice()?, gr.as_slice()?);
        let (gxs, gys) = (gxw.as_slice_mut()?, gyw.as_slice_mut()?);
        run_detached(py, || {
            distances::pairwise_backward(xs, ys, gs, dims, m, gxs, gys)
        })?;
    }
    Ok((gx.into_any(), gy.into_any()))
}

/// Gradients of `pairwise_distances` for `x` and `y`.
#[pyfunction]
#[pyo3(signature = (x, y, grad_output, metric="sqeuclidean"))]
fn pairwise_distances_backward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    grad_output: &Bound<'py, PyAny>,
    metric: &str,
) -> PyResult<Pair<'py>> {
    let m = self::metric(metric)?;
    if same_kind(&[(x, "x"), (y, "y"), (grad_output, "grad_output")])? {
        pairwise_backward_t::<f64>(py, x, y, grad_output, m)
    } else {
        pairwise_backward_t::<f32>(py, x, y, grad_output, m)
    }
}

fn episode<'py, F: Real + Element>(
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    ways: usize,
) -> PyResult<(
    Bound<'py, PyArrayDyn<F>>,
    Bound<'py, PyArrayDyn<i64>>,
    Bound<'py, PyArrayDyn<F>>,
    EpisodeDims,
)> {
    let (s, q) = (
        checked::<F>(support, "support", "float", 3)?,
        checked::<F>(query, "query", "float", 3)?,
    );
    let ((b, ns, d), (b2, nq, d2)) = (dims3(&s), dims3(&q));
    if b != b2 || d != d2 {
        return Err(PyValueError::new_err(format!(
            "support, query: shapes {:?} and {:?} must agree in batch and feature dimensions",
            s.shape(),
            q.shape()
        )));
    }
    let l = labels2(labels, b, ns)?;
    Ok((
        s,
        l,
        q,
        EpisodeDims {
            tasks: b,
            support: ns,
            query: nq,
            dim: d,
            ways,
        },
    ))
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
    let out = new3::<F>(py, (dims.tasks, dims.query, ways));
    let protos = new3::<F>(py, (dims.tasks, ways, dims.dim));
    {
        let (sr, lr, qr) = (s.readonly(), l.readonly(), q.readonly());
        let (mut ow, mut pw) = (out.readwrite(), protos.readwrite());
        let (ss, ls, qs) = (sr.as_slice()?, lr.as_slice()?, qr.as_slice()?);
        let (os, ps) = (ow.as_slice_mut()?, pw.as_slice_mut()?);
        run_detached(py, || {
            distances::proto_distances(ss, ls, qs, dims, m, os, ps)
        })?;
    }
    Ok((out.into_any(), protos.into_any()))
}

/// Fused mean prototypes + distances: returns `(distances (B, Q, ways), prototypes (B, ways, D))`.
#[pyfunction]
#[pyo3(signature = (support, labels, query, ways, metric="sqeuclidean"))]
fn proto_distances<'py>(
    py: Python<'py>,
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    ways: i64,
    metric: &str,
) -> PyResult<Pair<'py>> {
    let (ways, m) = (positive(ways, "ways")?, self::metric(metric)?);
    if same_kind(&[(support, "support"), (query, "query")])? {
        proto_distances_t::<f64>(py, support, labels, query, ways, m)
    } else {
        proto_distances_t::<f32>(py, support, labels, query, ways, m)
    }
}

#[allow(clippy::too_many_arguments)]
fn proto_distances_backward_t<'py, F: Real + Element>(
    py: Python<'py>,
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    protos: &Bound<'py, PyAny>,
    grad: &Bound<'py, PyAny>,
    ways: usize,
    m: Metric,
) -> PyResult<Pair<'py>> {
    let (s, l, q, dims) = episode::<F>(support, labels, query, ways)?;
    let p = checked::<F>(protos, "protos", "float", 3)?;
    let g = checked::<F>(grad, "grad_output", "float", 3)?;
    if g.shape() != [dims.tasks, dims.query, ways] || p.shape() != [dims.tasks, ways, dims.dim] {
        return Err(PyValueError::new_err(format!(
            "grad_output, protos: expected shapes ({}, {}, {ways}) and ({}, {ways}, {}), got {:?} and {:?}",
            dims.tasks, dims.query, dims.tasks, dims.dim, g.shape(), p.shape()
        )));
    }
    let gs = new3::<F>(py, (dims.tasks, dims.support, dims.dim));
    let gq = new3::<F>(py, (dims.tasks, dims.query, dims.dim));
    {
        let (sr, lr, qr, pr, gr) = (
            s.readonly(),
            l.readonly(),
            q.readonly(),
            p.readonly(),
            g.readonly(),
        );
        let (mut gsw, mut gqw) = (gs.readwrite(), gq.readwrite());
        let (ss, ls, qs, ps, grs) = (
            sr.as_slice()?,
            lr.as_slice()?,
            qr.as_slice()?,
            pr.as_slice()?,
            gr.as_slice()?,
        );
        let (gss, gqs) = (gsw.as_slice_mut()?, gqw.as_slice_mut()?);
        run_detached(py, || {
            distances::proto_distances_backward(ss, ls, qs, ps, grs, dims, m, gss, gqs)
        })?;
    }
    Ok((gs.into_any(), gq.into_any()))
}

/// Backward of `proto_distances`: returns `(grad_support, grad_query)`.
#[pyfunction]
#[pyo3(signature = (support, labels, query, protos, grad_output, ways, metric="sqeuclidean"))]
#[allow(clippy::too_many_arguments)]
fn proto_distances_backward<'py>(
    py: Python<'py>,
    support: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    protos: &Bound<'py, PyAny>,
    grad_output: &Bound<'py, PyAny>,
    ways: i64,
    metric: &str,
) -> PyResult<Pair<'py>> {
    let (ways, m) = (positive(ways, "ways")?, self::metric(metric)?);
    if same_kind(&[
        (support, "support"),
        (query, "query"),
        (protos, "protos"),
        (grad_output, "grad_output"),
    ])? {
        proto_distances_backward_t::<f64>(py, support, labels, query, protos, grad_output, ways, m)
    } else {
        proto_distances_backward_t::<f32>(py, support, labels, query, protos, grad_output, ways, m)
    }
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
