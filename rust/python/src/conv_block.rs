//! The fused first Conv-4 blocks for CPU training, forward into a caller-allocated output
//! and the parameters' gradients: the pooling form (conv 3x3, batch-statistics BatchNorm,
//! 2x2 max-pool, ReLU; channels-last output) and Finn et al.'s (conv 3x3 with stride 2,
//! batch-statistics BatchNorm, ReLU; NCHW output). The core checks the values (finite,
//! variances >= 0, eps > 0); here the shapes, and that `out` has memory of its own.

use metarobust_core::conv_block::{self, BatchStats, BlockShape};
use metarobust_core::memory::try_to_vec;
use metarobust_core::strided_block;
use numpy::{PyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::args::{self, given, Given};
use crate::arrays::{checked, disjoint, read, slice, slice_mut, span, write};
use crate::{guard, run_detached, to_py};

type Array<'py> = Bound<'py, PyArrayDyn<f32>>;

/// The block's shape from `x (N, cin, H, W)` and `weight (C, cin, 3, 3)`.
fn shape(x: &[usize], weight: &[usize]) -> PyResult<BlockShape> {
    if x.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "x: every dimension must be >= 1, got shape {x:?}"
        )));
    }
    if weight[1] != x[1] || weight[2] != 3 || weight[3] != 3 {
        return Err(PyValueError::new_err(format!(
            "weight: expected shape (C, {}, 3, 3) for x of shape {x:?}, got {weight:?}",
            x[1]
        )));
    }
    Ok(BlockShape {
        n: x[0],
        cin: x[1],
        h: x[2],
        w: x[3],
        c: weight[0],
    })
}

/// The checked `x` and `weight` and the block's shape.
fn x_and_weight<'py>(
    x: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
) -> PyResult<(Array<'py>, Array<'py>, BlockShape)> {
    let xa = checked::<f32>(x, "x", "float32", 4)?;
    let wa = checked::<f32>(weight, "weight", "float32", 4)?;
    let sh = shape(xa.shape(), wa.shape())?;
    Ok((xa, wa, sh))
}

/// A per-channel argument, copied.
fn vector(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f32>> {
    let a = checked::<f32>(obj, name, "float32", 1)?;
    let ro = read(&a, name)?;
    try_to_vec(slice(&ro, name)?, name).map_err(to_py)
}

/// `bias`, `gamma`, `beta`.
fn affine_params(objs: [&Bound<'_, PyAny>; 3]) -> PyResult<[Vec<f32>; 3]> {
    let [b, g, be] = objs;
    Ok([vector(b, "bias")?, vector(g, "gamma")?, vector(be, "beta")?])
}

/// The output array `out`, checked: not the same memory as `inputs`.
fn output<'py>(obj: &Bound<'py, PyAny>, inputs: [(&Array<'py>, &str); 2]) -> PyResult<Array<'py>> {
    let oa = checked::<f32>(obj, "out", "float32", 4)?;
    let spans = inputs.map(|(a, name)| span(a, name));
    disjoint(&[span(&oa, "out")], &spans)?;
    Ok(oa)
}

fn eps_arg(obj: &Bound<'_, PyAny>) -> PyResult<f32> {
    args::float32(obj, "eps")
}

/// Fills `out (N, H // 2, W // 2, C)` with the block's training output for `x`; returns the
/// batch mean and biased variance of the convolution's output per channel.
#[pyfunction]
#[pyo3(signature = (x, weight, bias, gamma, beta, eps, out))]
fn conv_block_forward<'py>(
    py: Python<'py>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    eps: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("conv_block_forward", || {
        let (xa, wa, sh) = x_and_weight(x, weight)?;
        let [b, g, be] = affine_params([bias, gamma, beta])?;
        let eps = eps_arg(eps)?;
        let oa = output(out, [(&xa, "x"), (&wa, "weight")])?;
        let (xr, wr, mut ow) = (read(&xa, "x")?, read(&wa, "weight")?, write(&oa, "out")?);
        let (xs, ws, os) = (
            slice(&xr, "x")?,
            slice(&wr, "weight")?,
            slice_mut(&mut ow, "out")?,
        );
        let stats = run_detached(py, || conv_block::forward(xs, sh, ws, &b, &g, &be, eps, os))?;
        Ok((stats.mean, stats.var).into_pyobject(py)?.into_any())
    })
}

/// The gradients `(weight, bias, gamma, beta)` of the block's parameters, given the
/// gradient `dout` of `conv_block_forward`'s `out` and its `mean` and `var`.
#[pyfunction]
#[pyo3(signature = (x, weight, bias, gamma, beta, mean, var, eps, dout))]
fn conv_block_backward<'py>(
    py: Python<'py>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    mean: &Bound<'_, PyAny>,
    var: &Bound<'_, PyAny>,
    eps: &Bound<'_, PyAny>,
    dout: &Bound<'_, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("conv_block_backward", || {
        let (xa, wa, sh) = x_and_weight(x, weight)?;
        let [b, g, be] = affine_params([bias, gamma, beta])?;
        let stats = BatchStats {
            mean: vector(mean, "mean")?,
            var: vector(var, "var")?,
        };
        let eps = eps_arg(eps)?;
        let da = checked::<f32>(dout, "dout", "float32", 4)?;
        let (xr, wr, dr) = (read(&xa, "x")?, read(&wa, "weight")?, read(&da, "dout")?);
        let (xs, ws, ds) = (slice(&xr, "x")?, slice(&wr, "weight")?, slice(&dr, "dout")?);
        let grads = run_detached(py, || {
            conv_block::backward(xs, sh, ws, &b, &g, &be, &stats, eps, ds)
        })?;
        let grads = (grads.weight, grads.bias, grads.gamma, grads.beta);
        Ok(grads.into_pyobject(py)?.into_any())
    })
}

/// Fills `out (N, C, ceil(H / 2), ceil(W / 2))` with the strided block's training output for
/// `x`; returns the batch mean and biased variance of the convolution's output per channel.
/// `parallel`: spread the images over the thread pool (False: the calling thread only).
#[pyfunction]
#[pyo3(
    signature = (x, weight, bias, gamma, beta, eps, out, parallel = Given(None)),
    text_signature = "(x, weight, bias, gamma, beta, eps, out, parallel=True)"
)]
fn strided_block_forward<'py>(
    py: Python<'py>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    eps: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    #[pyo3(from_py_with = given)] parallel: Given<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("strided_block_forward", || {
        let (xa, wa, sh) = x_and_weight(x, weight)?;
        let [b, g, be] = affine_params([bias, gamma, beta])?;
        let eps = eps_arg(eps)?;
        let oa = output(out, [(&xa, "x"), (&wa, "weight")])?;
        let parallel = parallel.get("parallel", args::boolean, true)?;
        let (xr, wr, mut ow) = (read(&xa, "x")?, read(&wa, "weight")?, write(&oa, "out")?);
        let (xs, ws, os) = (
            slice(&xr, "x")?,
            slice(&wr, "weight")?,
            slice_mut(&mut ow, "out")?,
        );
        let stats = run_detached(py, || {
            strided_block::forward(xs, sh, ws, &b, &g, &be, eps, os, parallel)
        })?;
        Ok((stats.mean, stats.var).into_pyobject(py)?.into_any())
    })
}

/// The gradients `(weight, gamma, beta)` of the strided block's parameters (the conv bias's
/// is zero), given its output `out`, the gradient `dout` of that output and the forward's
/// `var`.
#[pyfunction]
#[pyo3(
    signature = (x, weight, gamma, var, eps, out, dout, parallel = Given(None)),
    text_signature = "(x, weight, gamma, var, eps, out, dout, parallel=True)"
)]
fn strided_block_backward<'py>(
    py: Python<'py>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    var: &Bound<'_, PyAny>,
    eps: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    dout: &Bound<'_, PyAny>,
    #[pyo3(from_py_with = given)] parallel: Given<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    guard("strided_block_backward", || {
        let (xa, wa, sh) = x_and_weight(x, weight)?;
        let (g, v) = (vector(gamma, "gamma")?, vector(var, "var")?);
        let eps = eps_arg(eps)?;
        let oa = checked::<f32>(out, "out", "float32", 4)?;
        let da = checked::<f32>(dout, "dout", "float32", 4)?;
        let parallel = parallel.get("parallel", args::boolean, true)?;
        let (xr, wr) = (read(&xa, "x")?, read(&wa, "weight")?);
        let (or, dr) = (read(&oa, "out")?, read(&da, "dout")?);
        let (xs, ws) = (slice(&xr, "x")?, slice(&wr, "weight")?);
        let (os, ds) = (slice(&or, "out")?, slice(&dr, "dout")?);
        let grads = run_detached(py, || {
            strided_block::backward(xs, sh, ws, &g, &v, eps, os, ds, parallel)
        })?;
        Ok((grads.weight, grads.gamma, grads.beta)
            .into_pyobject(py)?
            .into_any())
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(conv_block_forward, m)?)?;
    m.add_function(wrap_pyfunction!(conv_block_backward, m)?)?;
    m.add_function(wrap_pyfunction!(strided_block_forward, m)?)?;
    m.add_function(wrap_pyfunction!(strided_block_backward, m)?)?;
    Ok(())
}
