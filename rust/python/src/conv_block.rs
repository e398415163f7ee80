//! The fused first Conv-4 blocks for CPU training, forward into a caller-allocated output
//! and the parameters' gradients: the pooling form (conv 3x3, batch-statistics BatchNorm,
//! 2x2 max-pool, ReLU; channels-last output) and Finn et al.'s (conv 3x3 with stride 2,
//! batch-statistics BatchNorm, ReLU; NCHW output).

use metarobust_core::conv_block::{self, BatchStats, BlockShape};
use metarobust_core::strided_block;
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::arrays::checked;
use crate::run_detached;

type Params = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// The block's shape from `x (N, cin, H, W)` and `weight (C, cin, 3, 3)`.
fn shape(x: &[usize], weight: &[usize]) -> PyResult<BlockShape> {
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

/// The checked `x` and `weight`, the block's shape, and `bias`, `gamma`, `beta`.
fn inputs<'py>(
    x: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
    gamma: &Bound<'py, PyAny>,
    beta: &Bound<'py, PyAny>,
) -> PyResult<(Array<'py>, Array<'py>, BlockShape, [Vec<f32>; 3])> {
    let xa = checked::<f32>(x, "x", "float32", 4)?;
    let wa = checked::<f32>(weight, "weight", "float32", 4)?;
    let sh = shape(xa.shape(), wa.shape())?;
    let per_channel = [
        vector(bias, "bias")?,
        vector(gamma, "gamma")?,
        vector(beta, "beta")?,
    ];
    Ok((xa, wa, sh, per_channel))
}

type Array<'py> = Bound<'py, PyArrayDyn<f32>>;

fn vector(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f32>> {
    Ok(checked::<f32>(obj, name, "float32", 1)?
        .readonly()
        .as_slice()?
        .to_vec())
}

/// Fills `out (N, H // 2, W // 2, C)` with the block's training output for `x`; returns the
/// batch mean and biased variance of the convolution's output per channel.
#[pyfunction]
#[pyo3(signature = (x, weight, bias, gamma, beta, eps, out))]
fn conv_block_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    eps: f32,
    out: &Bound<'_, PyAny>,
) -> PyResult<(Vec<f32>, Vec<f32>)> {
    let (xa, wa, sh, [b, g, be]) = inputs(x, weight, bias, gamma, beta)?;
    let mut oa = checked::<f32>(out, "out", "float32", 4)?.readwrite();
    let (xr, wr) = (xa.readonly(), wa.readonly());
    let (xs, ws, os) = (xr.as_slice()?, wr.as_slice()?, oa.as_slice_mut()?);
    let stats = run_detached(py, || conv_block::forward(xs, sh, ws, &b, &g, &be, eps, os))?;
    Ok((stats.mean, stats.var))
}

/// The gradients `(weight, bias, gamma, beta)` of the block's parameters, given the
/// gradient `dout` of `conv_block_forward`'s `out` and its `mean` and `var`.
#[pyfunction]
#[pyo3(signature = (x, weight, bias, gamma, beta, mean, var, eps, dout))]
fn conv_block_backward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    mean: &Bound<'_, PyAny>,
    var: &Bound<'_, PyAny>,
    eps: f32,
    dout: &Bound<'_, PyAny>,
) -> PyResult<Params> {
    let (xa, wa, sh, [b, g, be]) = inputs(x, weight, bias, gamma, beta)?;
    let stats = BatchStats {
        mean: vector(mean, "mean")?,
        var: vector(var, "var")?,
    };
    let da = checked::<f32>(dout, "dout", "float32", 4)?;
    let (xr, wr, dr) = (xa.readonly(), wa.readonly(), da.readonly());
    let (xs, ws, ds) = (xr.as_slice()?, wr.as_slice()?, dr.as_slice()?);
    let grads = run_detached(py, || {
        conv_block::backward(xs, sh, ws, &b, &g, &be, &stats, eps, ds)
    })?;
    Ok((grads.weight, grads.bias, grads.gamma, grads.beta))
}

/// Fills `out (N, C, ceil(H / 2), ceil(W / 2))` with the strided block's training output for
/// `x`; returns the batch mean and biased variance of the convolution's output per channel.
/// `parallel`: spread the images over the thread pool (False: the calling thread only).
#[pyfunction]
#[pyo3(signature = (x, weight, bias, gamma, beta, eps, out, parallel = true))]
fn strided_block_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    bias: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    beta: &Bound<'_, PyAny>,
    eps: f32,
    out: &Bound<'_, PyAny>,
    parallel: bool,
) -> PyResult<(Vec<f32>, Vec<f32>)> {
    let (xa, wa, sh, [b, g, be]) = inputs(x, weight, bias, gamma, beta)?;
    let mut oa = checked::<f32>(out, "out", "float32", 4)?.readwrite();
    let (xr, wr) = (xa.readonly(), wa.readonly());
    let (xs, ws, os) = (xr.as_slice()?, wr.as_slice()?, oa.as_slice_mut()?);
    let stats = run_detached(py, || {
        strided_block::forward(xs, sh, ws, &b, &g, &be, eps, os, parallel)
    })?;
    Ok((stats.mean, stats.var))
}

/// The gradients `(weight, gamma, beta)` of the strided block's parameters (the conv bias's
/// is zero), given its output `out`, the gradient `dout` of that output and the forward's
/// `var`.
#[pyfunction]
#[pyo3(signature = (x, weight, gamma, var, eps, out, dout, parallel = true))]
fn strided_block_backward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weight: &Bound<'_, PyAny>,
    gamma: &Bound<'_, PyAny>,
    var: &Bound<'_, PyAny>,
    eps: f32,
    out: &Bound<'_, PyAny>,
    dout: &Bound<'_, PyAny>,
    parallel: bool,
) -> PyResult<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let xa = checked::<f32>(x, "x", "float32", 4)?;
    let wa = checked::<f32>(weight, "weight", "float32", 4)?;
    let sh = shape(xa.shape(), wa.shape())?;
    let (g, v) = (vector(gamma, "gamma")?, vector(var, "var")?);
    let oa = checked::<f32>(out, "out", "float32", 4)?;
    let da = checked::<f32>(dout, "dout", "float32", 4)?;
    let (xr, wr, or, dr) = (xa.readonly(), wa.readonly(), oa.readonly(), da.readonly());
    let (xs, ws, os, ds) = (
        xr.as_slice()?,
        wr.as_slice()?,
        or.as_slice()?,
        dr.as_slice()?,
    );
    let grads = run_detached(py, || {
        strided_block::backward(xs, sh, ws, &g, &v, eps, os, ds, parallel)
    })?;
    Ok((grads.weight, grads.gamma, grads.beta))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(conv_block_forward, m)?)?;
    m.add_function(wrap_pyfunction!(conv_block_backward, m)?)?;
    m.add_function(wrap_pyfunction!(strided_block_forward, m)?)?;
    m.add_function(wrap_pyfunction!(strided_block_backward, m)?)?;
    Ok(())
}
