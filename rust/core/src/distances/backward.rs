//! The backward passes of the distances: per block of query rows, GEMMs for large blocks
//! and row updates for episode-sized ones, and the cosine's chain rule through the
//! normalisation.

use rayon::prelude::*;

use super::*;

/// Backward of one block of query rows: writes `gx (r, d)` and adds this block's share of
/// the `y` gradient to `gy_acc (n, d)` (for cosine, before the normalisation's chain rule).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows<F: Real>(
    x: &[F],
    y: &[F],
    yh: &[F],
    grad: &[F],
    r: usize,
    n: usize,
    d: usize,
    metric: Metric,
    gx: &mut [F],
    gy_acc: &mut [F],
) {
    if r * n * d < GEMM_MIN_WORK {
        return backward_rows_small(x, yh, y, grad, n, d, metric, gx, gy_acc);
    }
    match metric {
        Metric::SqEuclidean => backward_rows_sq(x, y, grad, r, n, d, gx, gy_acc),
        Metric::Cosine => backward_rows_cosine(x, yh, grad, r, n, d, gx, gy_acc),
    }
}

/// [`backward_rows`] for the squared Euclidean distance, through GEMMs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows_sq<F: Real>(
    x: &[F],
    y: &[F],
    grad: &[F],
    r: usize,
    n: usize,
    d: usize,
    gx: &mut [F],
    gy_acc: &mut [F],
) {
    let (di, ni) = (d as isize, n as isize);
    // gx = 2 (rowsum(g) x - g y), gy = 2 (colsum(g) y - g^T x)
    let two = F::one() + F::one();
    for ((g, xr), gr) in gx
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(grad.chunks_exact(n))
    {
        let s = two * gr.iter().fold(F::zero(), |a, &b| a + b);
        for (o, &v) in g.iter_mut().zip(xr) {
            *o = s * v;
        }
    }
    F::gemm(r, n, d, -two, grad, ni, 1, y, di, 1, F::one(), gx, di);
    for (j, (g, yr)) in gy_acc
        .chunks_exact_mut(d)
        .zip(y.chunks_exact(d))
        .enumerate()
    {
        let s = two * (0..r).fold(F::zero(), |a, i| a + grad[i * n + j]);
        for (o, &v) in g.iter_mut().zip(yr) {
            *o = *o + s * v;
        }
    }
    F::gemm(n, r, d, -two, grad, 1, ni, x, di, 1, F::one(), gy_acc, di);
}

/// [`backward_rows`] for the cosine distance, through GEMMs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows_cosine<F: Real>(
    x: &[F],
    yh: &[F],
    grad: &[F],
    r: usize,
    n: usize,
    d: usize,
    gx: &mut [F],
    gy_acc: &mut [F],
) {
    let (di, ni) = (d as isize, n as isize);
    // dist = 1 - xh.yh with xh = x / max(|x|, eps): gxh = -g yh, gyh = -g^T xh.
    let ix = inv_norms(x, d);
    let xh = normalized(x, &ix, d);
    F::gemm(
        r,
        n,
        d,
        -F::one(),
        grad,
        ni,
        1,
        yh,
        di,
        1,
        F::zero(),
        gx,
        di,
    );
    F::gemm(
        n,
        r,
        d,
        -F::one(),
        grad,
        1,
        ni,
        &xh,
        di,
        1,
        F::one(),
        gy_acc,
        di,
    );
    project_normalize(x, &xh, &ix, d, gx);
}

/// [`backward_rows`] for episode-sized blocks: row updates (`axpy` along `d`) instead of a
/// GEMM, whose packing costs more than the arithmetic at these sizes.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows_small<F: Real>(
    x: &[F],
    yh: &[F],
    y: &[F],
    grad: &[F],
    n: usize,
    d: usize,
    metric: Metric,
    gx: &mut [F],
    gy_acc: &mut [F],
) {
    let two = F::one() + F::one();
    let (ix, xh) = if metric == Metric::Cosine {
        let ix = inv_norms(x, d);
        let xh = normalized(x, &ix, d);
        (ix, xh)
    } else {
        (Vec::new(), Vec::new())
    };
    let (ys, xs) = if metric == Metric::Cosine {
        (yh, &xh[..])
    } else {
        (y, x)
    };
    for (i, (gxr, gr)) in gx.chunks_exact_mut(d).zip(grad.chunks_exact(n)).enumerate() {
        let xr = &xs[i * d..(i + 1) * d];
        match metric {
            Metric::SqEuclidean => {
                // gx_i = 2 (sum_j g_ij) x_i - 2 sum_j g_ij y_j; gy_j += 2 g_ij (y_j - x_i)
                let s = two * gr.iter().fold(F::zero(), |a, &b| a + b);
                for (o, &v) in gxr.iter_mut().zip(xr) {
                    *o = s * v;
                }
                for (j, &g) in gr.iter().enumerate() {
                    let (yr, gyr) = (&ys[j * d..(j + 1) * d], &mut gy_acc[j * d..(j + 1) * d]);
                    let g2 = two * g;
                    for ((o, a), (&yv, &xv)) in
                        gxr.iter_mut().zip(gyr.iter_mut()).zip(yr.iter().zip(xr))
                    {
                        *o = *o - g2 * yv;
                        *a = *a + g2 * (yv - xv);
                    }
                }
            }
            Metric::Cosine => {
                gxr.iter_mut().for_each(|o| *o = F::zero());
                for (j, &g) in gr.iter().enumerate() {
                    let (yr, gyr) = (&ys[j * d..(j + 1) * d], &mut gy_acc[j * d..(j + 1) * d]);
                    for ((o, a), (&yv, &xv)) in
                        gxr.iter_mut().zip(gyr.iter_mut()).zip(yr.iter().zip(xr))
                    {
                        *o = *o - g * yv;
                        *a = *a - g * xv;
                    }
                }
            }
        }
    }
    if metric == Metric::Cosine {
        project_normalize(x, &xh, &ix, d, gx);
    }
}

/// One task's backward: `grad (q, n)` to `gx (q, d)` and `gy (n, d)`, its query rows split
/// into `blocks` parallel blocks (each with its own partial `gy`, summed at the end).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_task<F: Real>(
    x: &[F],
    y: &[F],
    grad: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    gx: &mut [F],
    gy: &mut [F],
    blocks: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor supports AVX2 (checked just above).
        return unsafe { backward_task_avx2(x, y, grad, q, n, d, metric, gx, gy, blocks) };
    }
    backward_task_any(x, y, grad, q, n, d, metric, gx, gy, blocks)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_task_avx2<F: Real>(
    x: &[F],
    y: &[F],
    grad: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    gx: &mut [F],
    gy: &mut [F],
    blocks: usize,
) {
    backward_task_any(x, y, grad, q, n, d, metric, gx, gy, blocks)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_task_any<F: Real>(
    x: &[F],
    y: &[F],
    grad: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    gx: &mut [F],
    gy: &mut [F],
    blocks: usize,
) {
    let iy = inv_norms(y, d);
    let yh = if metric == Metric::Cosine {
        normalized(y, &iy, d)
    } else {
        Vec::new()
    };
    gy.iter_mut().for_each(|v| *v = F::zero());
    if blocks <= 1 {
        backward_rows(x, y, &yh, grad, q, n, d, metric, gx, gy);
    } else {
        let rows = q.div_ceil(blocks);
        let partials: Vec<Vec<F>> = gx
            .par_chunks_mut(rows * d)
            .enumerate()
            .map(|(b, gxb)| {
                let r = gxb.len() / d;
                let mut acc = vec![F::zero(); n * d];
                let (xb, gb) = (
                    &x[b * rows * d..(b * rows + r) * d],
                    &grad[b * rows * n..(b * rows + r) * n],
                );
                backward_rows(xb, y, &yh, gb, r, n, d, metric, gxb, &mut acc);
                acc
            })
            .collect();
        for p in partials {
            for (o, v) in gy.iter_mut().zip(p) {
                *o = *o + v;
            }
        }
    }
    if metric == Metric::Cosine {
        project_normalize(y, &yh, &iy, d, gy);
    }
}

/// Chain rule through `v -> v / max(|v|, eps)`: `(g - vh (vh.g)) / |v|`, or `g / eps` below eps.
fn project_normalize<F: Real>(v: &[F], vh: &[F], inv: &[F], d: usize, g: &mut [F]) {
    // Both float types hold it: the fallback is never taken.
    let eps = F::from(COSINE_EPS).unwrap_or_else(F::epsilon);
    for ((gr, (vr, hr)), &s) in g
        .chunks_exact_mut(d)
        .zip(v.chunks_exact(d).zip(vh.chunks_exact(d)))
        .zip(inv)
    {
        if dot(vr, vr).sqrt() > eps {
            let p = dot(hr, gr);
            for (o, &h) in gr.iter_mut().zip(hr) {
                *o = (*o - h * p) * s;
            }
        } else {
            gr.iter_mut().for_each(|o| *o = *o * s);
        }
    }
}

/// Backward of [`pairwise`]: `grad (B, Q, N)` to `gx (B, Q, D)`, `gy (B, N, D)`.
pub fn pairwise_backward<F: Real>(
    x: &[F],
    y: &[F],
    grad: &[F],
    dims: Dims,
    metric: Metric,
    gx: &mut [F],
    gy: &mut [F],
) -> Result<()> {
    dims.check(x, y)?;
    let Dims { tasks, q, n, d } = dims;
    if grad.len() != tasks * q * n {
        return value_err(format!(
            "grad_output: expected {} values, got {}",
            tasks * q * n,
            grad.len()
        ));
    }
    check_finite(grad, "grad_output")?;
    if gx.len() != x.len() || gy.len() != y.len() {
        return value_err("gx/gy: wrong sizes");
    }
    pool::install_for(tasks * q * n * d, |par| {
        let blocks = if par { blocks_per_task(tasks, q) } else { 1 };
        let task = |(t, (gxt, gyt)): (usize, (&mut [F], &mut [F]))| {
            let (xt, yt) = (
                &x[t * q * d..(t + 1) * q * d],
                &y[t * n * d..(t + 1) * n * d],
            );
            let gt = &grad[t * q * n..(t + 1) * q * n];
            backward_task(xt, yt, gt, q, n, d, metric, gxt, gyt, blocks)
        };
        if par {
            gx.par_chunks_mut(q * d)
                .zip(gy.par_chunks_mut(n * d))
                .enumerate()
                .for_each(task)
        } else {
            gx.chunks_mut(q * d)
                .zip(gy.chunks_mut(n * d))
                .enumerate()
                .for_each(task)
        }
    });
    Ok(())
}
