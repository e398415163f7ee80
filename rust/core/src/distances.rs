//! Squared-Euclidean and cosine distances between `(B, Q, D)` and `(B, N, D)`, their backward
//! passes, and fused mean-prototypes + distances for episodes.
//!
//! Small tasks take a direct loop (exact, no cancellation); larger ones a GEMM from
//! `matrixmultiply` with the norms added (as torch.cdist does). Work is split over tasks and,
//! when there are fewer tasks than threads, over blocks of query rows.

use num_traits::Float;
use rayon::prelude::*;

use crate::error::{checked_product, value_err, Result};
use crate::pool;
use crate::prototypes::{check_finite, check_labels, mean_backward_task, mean_task, Shape};

/// Cosine distance is `1 - x.y / (max(|x|, EPS) * max(|y|, EPS))`, as `F.normalize` does.
pub const COSINE_EPS: f64 = 1e-8;

/// Products above this many multiply-adds go through GEMM.
const GEMM_MIN_WORK: usize = 1 << 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    SqEuclidean,
    Cosine,
}

/// Float types with a GEMM: `c = alpha * a @ b + beta * c`, all row-major with given strides.
pub trait Real: Float + Send + Sync + std::iter::Sum + 'static {
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        rsa: isize,
        csa: isize,
        b: &[Self],
        rsb: isize,
        csb: isize,
        beta: Self,
        c: &mut [Self],
        rsc: isize,
    );
}

macro_rules! impl_real {
    ($t:ty, $f:path) => {
        impl Real for $t {
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                rsa: isize,
                csa: isize,
                b: &[Self],
                rsb: isize,
                csb: isize,
                beta: Self,
                c: &mut [Self],
                rsc: isize,
            ) {
                // Bounds: the callers pass views whose extents match (m, k, n) and strides.
                assert!(m == 0 || n == 0 || c.len() >= (m - 1) * rsc as usize + n);
                // SAFETY: the slices cover every element the strides address (checked by the
                // callers' shape logic and the assertion above for the output).
                unsafe {
                    $f(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c.as_mut_ptr(),
                        rsc,
                        1,
                    )
                }
            }
        }
    };
}
impl_real!(f32, matrixmultiply::sgemm);
impl_real!(f64, matrixmultiply::dgemm);

/// Independent accumulators let the compiler vectorise what a single running sum would chain.
const LANES: usize = 16;

#[inline(always)]
fn lane_sum<F: Real>(a: &[F], b: &[F], term: impl Fn(F, F) -> F) -> F {
    let mut acc = [F::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(F::zero(), |s, (&x, &y)| s + term(x, y));
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = acc[i] + term(x[i], y[i]);
        }
    }
    // Pairwise (tree) reduction: four dependent adds instead of sixteen.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] = acc[i] + acc[i + width];
        }
    }
    acc[0] + tail
}

#[inline(always)]
fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    lane_sum(a, b, |x, y| x * y)
}

fn inv_norms<F: Real>(x: &[F], dim: usize) -> Vec<F> {
    let eps = F::from(COSINE_EPS).unwrap();
    x.chunks_exact(dim)
        .map(|r| F::one() / dot(r, r).sqrt().max(eps))
        .collect()
}

/// `out (q, n) = x (q, d) @ y (n, d)^T`.
fn gram<F: Real>(x: &[F], y: &[F], q: usize, n: usize, d: usize, out: &mut [F]) {
    if q * n * d >= GEMM_MIN_WORK {
        F::gemm(
            q,
            d,
            n,
            F::one(),
            x,
            d as isize,
            1,
            y,
            1,
            d as isize,
            F::zero(),
            out,
            n as isize,
        );
    } else {
        for (o, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(d)) {
            for (v, yr) in o.iter_mut().zip(y.chunks_exact(d)) {
                *v = dot(xr, yr);
            }
        }
    }
}

/// Distances of query rows `x (q, d)` to `y (n, d)` into `out (q, n)`, with AVX2 code
/// where the processor has it (the portable build targets SSE2 only).
fn forward_block<F: Real>(
    x: &[F],
    y: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    out: &mut [F],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor supports AVX2 (checked just above).
        return unsafe { forward_block_avx2(x, y, q, n, d, metric, out) };
    }
    forward_block_any(x, y, q, n, d, metric, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn forward_block_avx2<F: Real>(
    x: &[F],
    y: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    out: &mut [F],
) {
    forward_block_any(x, y, q, n, d, metric, out)
}

#[inline(always)]
fn forward_block_any<F: Real>(
    x: &[F],
    y: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    out: &mut [F],
) {
    if q * n * d < GEMM_MIN_WORK {
        return tiled_block(x, y, q, n, d, metric, out);
    }
    gram(x, y, q, n, d, out);
    match metric {
        Metric::SqEuclidean => {
            let yy: Vec<F> = y.chunks_exact(d).map(|r| dot(r, r)).collect();
            let two = F::one() + F::one();
            for (o, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(d)) {
                let xx = dot(xr, xr);
                for (v, &yn) in o.iter_mut().zip(&yy) {
                    *v = (xx + yn - two * *v).max(F::zero());
                }
            }
        }
        Metric::Cosine => {
            let (ix, iy) = (inv_norms(x, d), inv_norms(y, d));
            for (o, &a) in out.chunks_exact_mut(n).zip(&ix) {
                for (v, &b) in o.iter_mut().zip(&iy) {
                    *v = F::one() - *v * a * b;
                }
            }
        }
    }
}

/// Query rows handled together by [`tiled_block`]: accumulators that stay in registers.
const TILE: usize = 16;

/// Episode-sized distances with the queries transposed, so that the inner loop runs across
/// `TILE` queries at once: no per-pair horizontal sums, and squared differences stay exact.
#[inline(always)]
fn tiled_block<F: Real>(
    x: &[F],
    y: &[F],
    q: usize,
    n: usize,
    d: usize,
    metric: Metric,
    out: &mut [F],
) {
    let qp = q.div_ceil(TILE) * TILE;
    let mut xt = vec![F::zero(); d * qp];
    for (k, col) in xt.chunks_exact_mut(qp).enumerate() {
        for (v, xr) in col.iter_mut().zip(x.chunks_exact(d)) {
            *v = xr[k];
        }
    }
    let cosine = metric == Metric::Cosine;
    let (ix, iy) = if cosine {
        (inv_norms(x, d), inv_norms(y, d))
    } else {
        (Vec::new(), Vec::new())
    };
    for (j, yr) in y.chunks_exact(d).enumerate() {
        for t0 in (0..qp).step_by(TILE) {
            let acc = if cosine {
                tile_sum(&xt, yr, qp, t0, |a, b| a * b)
            } else {
                tile_sum(&xt, yr, qp, t0, |a, b| (a - b) * (a - b))
            };
            for (l, &a) in acc.iter().enumerate().take(q.saturating_sub(t0)) {
                let i = t0 + l;
                out[i * n + j] = if cosine {
                    F::one() - a * ix[i] * iy[j]
                } else {
                    a
                };
            }
        }
    }
}

#[inline(always)]
fn tile_sum<F: Real>(
    xt: &[F],
    yr: &[F],
    qp: usize,
    t0: usize,
    term: impl Fn(F, F) -> F,
) -> [F; TILE] {
    let mut acc = [F::zero(); TILE];
    for (k, &v) in yr.iter().enumerate() {
        let col: &[F; TILE] = xt[k * qp + t0..k * qp + t0 + TILE]
            .try_into()
            .expect("tile");
        for l in 0..TILE {
            acc[l] = acc[l] + term(col[l], v);
        }
    }
    acc
}

/// Row blocks per task so that small batches still use every thread.
fn blocks_per_task(tasks: usize, rows: usize) -> usize {
    let threads = pool::num_threads().max(1);
    if tasks >= threads || rows < 32 {
        1
    } else {
        (2 * threads).div_ceil(tasks).min(rows / 16).max(1)
    }
}

/// Problem sizes: `tasks` pairs of `x (q, d)` and `y (n, d)`.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub tasks: usize,
    pub q: usize,
    pub n: usize,
    pub d: usize,
}

impl Dims {
    fn check<F: Real>(&self, x: &[F], y: &[F]) -> Result<()> {
        let Dims { tasks, q, n, d } = *self;
        if tasks == 0 || q == 0 || n == 0 || d == 0 {
            return value_err(format!(
                "x, y: need non-empty shapes, got tasks={tasks} x rows={q} y rows={n} dim={d}"
            ));
        }
        let nx = checked_product(&[tasks, q, d], "x")?;
        let ny = checked_product(&[tasks, n, d], "y")?;
        checked_product(&[tasks, q, n], "distances")?;
        if x.len() != nx {
            return value_err(format!("x: expected {nx} values, got {}", x.len()));
        }
        if y.len() != ny {
            return value_err(format!("y: expected {ny} values, got {}", y.len()));
        }
        check_finite(x, "x")?;
        check_finite(y, "y")
    }
}

/// Distances `out (B, Q, N)`.
pub fn pairwise<F: Real>(
    x: &[F],
    y: &[F],
    dims: Dims,
    metric: Metric,
    out: &mut [F],
) -> Result<()> {
    dims.check(x, y)?;
    let Dims { tasks, q, n, .. } = dims;
    if out.len() != tasks * q * n {
        return value_err("out: wrong size for (tasks, q, n)");
    }
    pairwise_unchecked(x, y, dims, metric, out);
    Ok(())
}

fn pairwise_unchecked<F: Real>(x: &[F], y: &[F], dims: Dims, metric: Metric, out: &mut [F]) {
    let Dims { tasks, q, n, d } = dims;
    pool::install_for(tasks * q * n * d, |par| {
        let rows = if par {
            q.div_ceil(blocks_per_task(tasks, q))
        } else {
            q
        };
        let task = |(t, ot): (usize, &mut [F])| {
            let (xt, yt) = (
                &x[t * q * d..(t + 1) * q * d],
                &y[t * n * d..(t + 1) * n * d],
            );
            let block = |(blk, ob): (usize, &mut [F])| {
                let r = ob.len() / n;
                let xb = &xt[blk * rows * d..(blk * rows + r) * d];
                forward_block(xb, yt, r, n, d, metric, ob);
            };
            if rows < q {
                ot.par_chunks_mut(rows * n).enumerate().for_each(block)
            } else {
                ot.chunks_mut(rows * n).enumerate().for_each(block)
            }
        };
        if par {
            out.par_chunks_mut(q * n).enumerate().for_each(task)
        } else {
            out.chunks_mut(q * n).enumerate().for_each(task)
        }
    });
}

fn normalized<F: Real>(v: &[F], inv: &[F], d: usize) -> Vec<F> {
    v.chunks_exact(d)
        .zip(inv)
        .flat_map(|(r, &s)| r.iter().map(move |&x| x * s))
        .collect()
}

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
    let (di, ni) = (d as isize, n as isize);
    if r * n * d < GEMM_MIN_WORK {
        return backward_rows_small(x, yh, y, grad, n, d, metric, gx, gy_acc);
    }
    match metric {
        Metric::SqEuclidean => {
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
        Metric::Cosine => {
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
    }
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
fn backward_task<F: Real>(
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
    let eps = F::from(COSINE_EPS).unwrap();
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

/// Episode sizes for the fused kernel: `support (B, S, D)` with labels in `0..ways`,
/// `query (B, Q, D)`; output `(B, Q, ways)`.
#[derive(Debug, Clone, Copy)]
pub struct EpisodeDims {
    pub tasks: usize,
    pub support: usize,
    pub query: usize,
    pub dim: usize,
    pub ways: usize,
}

impl EpisodeDims {
    fn shape(&self) -> Shape {
        Shape {
            tasks: self.tasks,
            support: self.support,
            dim: self.dim,
            ways: self.ways,
        }
    }
    fn check<F: Real>(&self, support: &[F], labels: &[i64], query: &[F]) -> Result<Vec<usize>> {
        let EpisodeDims {
            tasks,
            support: s,
            query: q,
            dim,
            ways,
        } = *self;
        if tasks == 0 || s == 0 || q == 0 || dim == 0 {
            return value_err(format!(
                "support, query: need non-empty shapes, got tasks={tasks} support={s} query={q} dim={dim}"
            ));
        }
        let ns = checked_product(&[tasks, s, dim], "support")?;
        let nq = checked_product(&[tasks, q, dim], "query")?;
        checked_product(&[tasks, q, ways], "distances")?;
        if support.len() != ns {
            return value_err(format!(
                "support: expected {ns} values, got {}",
                support.len()
            ));
        }
        if query.len() != nq {
            return value_err(format!("query: expected {nq} values, got {}", query.len()));
        }
        check_finite(support, "support")?;
        check_finite(query, "query")?;
        check_labels(labels, self.shape())
    }
}

/// Mean prototypes of `support`, then distances of `query` to them; also returns the
/// prototypes `(B, ways, D)` for the backward pass.
pub fn proto_distances<F: Real>(
    support: &[F],
    labels: &[i64],
    query: &[F],
    dims: EpisodeDims,
    metric: Metric,
    out: &mut [F],
    protos: &mut [F],
) -> Result<()> {
    dims.check(support, labels, query)?;
    let EpisodeDims {
        tasks,
        support: s,
        query: q,
        dim: d,
        ways,
    } = dims;
    if out.len() != tasks * q * ways || protos.len() != tasks * ways * d {
        return value_err("out/protos: wrong sizes");
    }
    let mean = |counts: &mut Vec<usize>, (t, p): (usize, &mut [F])| {
        let (st, lt) = (
            &support[t * s * d..(t + 1) * s * d],
            &labels[t * s..(t + 1) * s],
        );
        mean_task(st, lt, d, ways, p, counts)
    };
    pool::install_for(tasks * s * d, |par| {
        if par {
            let counts = || vec![0usize; ways];
            protos
                .par_chunks_mut(ways * d)
                .enumerate()
                .for_each_init(counts, mean)
        } else {
            let mut counts = vec![0usize; ways];
            protos
                .chunks_mut(ways * d)
                .enumerate()
                .for_each(|item| mean(&mut counts, item))
        }
    });
    pairwise_unchecked(
        query,
        protos,
        Dims {
            tasks,
            q,
            n: ways,
            d,
        },
        metric,
        out,
    );
    Ok(())
}

/// Backward of [`proto_distances`]: `grad (B, Q, ways)` to `g_support`, `g_query`.
#[allow(clippy::too_many_arguments)]
pub fn proto_distances_backward<F: Real>(
    support: &[F],
    labels: &[i64],
    query: &[F],
    protos: &[F],
    grad: &[F],
    dims: EpisodeDims,
    metric: Metric,
    g_support: &mut [F],
    g_query: &mut [F],
) -> Result<()> {
    let counts = dims.check(support, labels, query)?;
    let EpisodeDims {
        tasks,
        support: s,
        query: q,
        dim: d,
        ways,
    } = dims;
    if grad.len() != tasks * q * ways {
        return value_err(format!(
            "grad_output: expected {} values, got {}",
            tasks * q * ways,
            grad.len()
        ));
    }
    check_finite(grad, "grad_output")?;
    if protos.len() != tasks * ways * d
        || g_support.len() != support.len()
        || g_query.len() != query.len()
    {
        return value_err("protos/g_support/g_query: wrong sizes");
    }
    pool::install_for(tasks * q * ways * d, |par| {
        let blocks = if par { blocks_per_task(tasks, q) } else { 1 };
        let task = |g_proto: &mut Vec<F>, (t, (gq, gs)): (usize, (&mut [F], &mut [F]))| {
            backward_task(
                &query[t * q * d..(t + 1) * q * d],
                &protos[t * ways * d..(t + 1) * ways * d],
                &grad[t * q * ways..(t + 1) * q * ways],
                q,
                ways,
                d,
                metric,
                gq,
                g_proto,
                blocks,
            );
            let (lt, ct) = (
                &labels[t * s..(t + 1) * s],
                &counts[t * ways..(t + 1) * ways],
            );
            mean_backward_task(g_proto, lt, ct, d, gs);
        };
        if par {
            let scratch = || vec![F::zero(); ways * d];
            g_query
                .par_chunks_mut(q * d)
                .zip(g_support.par_chunks_mut(s * d))
                .enumerate()
                .for_each_init(scratch, task)
        } else {
            let mut scratch = vec![F::zero(); ways * d];
            g_query
                .chunks_mut(q * d)
                .zip(g_support.chunks_mut(s * d))
                .enumerate()
                .for_each(|item| task(&mut scratch, item))
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64], y: &[f64], q: usize, n: usize, d: usize, metric: Metric) -> Vec<f64> {
        let mut out = vec![0.0; q * n];
        for i in 0..q {
            for j in 0..n {
                let (a, b) = (&x[i * d..(i + 1) * d], &y[j * d..(j + 1) * d]);
                out[i * n + j] = match metric {
                    Metric::SqEuclidean => a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum(),
                    Metric::Cosine => {
                        let na = a.iter().map(|u| u * u).sum::<f64>().sqrt().max(COSINE_EPS);
                        let nb = b.iter().map(|u| u * u).sum::<f64>().sqrt().max(COSINE_EPS);
                        1.0 - a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>() / (na * nb)
                    }
                };
            }
        }
        out
    }

    fn data(len: usize, salt: u64) -> Vec<f64> {
        (0..len)
            .map(|i| (((i as u64 * 2654435761 + salt) % 1000) as f64) / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn small_and_gemm_paths_match_naive() {
        for &(q, n, d) in &[(3, 2, 4), (64, 40, 50)] {
            for metric in [Metric::SqEuclidean, Metric::Cosine] {
                let (x, y) = (data(2 * q * d, 1), data(2 * n * d, 7));
                let mut out = vec![0.0; 2 * q * n];
                pairwise(&x, &y, Dims { tasks: 2, q, n, d }, metric, &mut out).unwrap();
                for t in 0..2 {
                    let want = naive(
                        &x[t * q * d..(t + 1) * q * d],
                        &y[t * n * d..(t + 1) * n * d],
                        q,
                        n,
                        d,
                        metric,
                    );
                    for (a, b) in out[t * q * n..(t + 1) * q * n].iter().zip(&want) {
                        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (q, n, d) = (3, 2, 4);
        for metric in [Metric::SqEuclidean, Metric::Cosine] {
            let (x, y, g) = (data(q * d, 3), data(n * d, 5), data(q * n, 11));
            let loss = |x: &[f64], y: &[f64]| {
                naive(x, y, q, n, d, metric)
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            };
            let (mut gx, mut gy) = (vec![0.0; q * d], vec![0.0; n * d]);
            pairwise_backward(
                &x,
                &y,
                &g,
                Dims { tasks: 1, q, n, d },
                metric,
                &mut gx,
                &mut gy,
            )
            .unwrap();
            let h = 1e-6;
            for i in 0..q * d {
                let (mut a, mut b) = (x.clone(), x.clone());
                a[i] += h;
                b[i] -= h;
                assert!(((loss(&a, &y) - loss(&b, &y)) / (2.0 * h) - gx[i]).abs() < 1e-6);
            }
            for i in 0..n * d {
                let (mut a, mut b) = (y.clone(), y.clone());
                a[i] += h;
                b[i] -= h;
                assert!(((loss(&x, &a) - loss(&x, &b)) / (2.0 * h) - gy[i]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn blocked_backward_equals_single_block() {
        let (q, n, d) = (37, 6, 9);
        for metric in [Metric::SqEuclidean, Metric::Cosine] {
            let (x, y, g) = (data(q * d, 2), data(n * d, 4), data(q * n, 6));
            let (mut gx1, mut gy1) = (vec![0.0; q * d], vec![0.0; n * d]);
            let (mut gx4, mut gy4) = (vec![0.0; q * d], vec![0.0; n * d]);
            backward_task(&x, &y, &g, q, n, d, metric, &mut gx1, &mut gy1, 1);
            pool::install(|| backward_task(&x, &y, &g, q, n, d, metric, &mut gx4, &mut gy4, 4));
            for (a, b) in gx1.iter().zip(&gx4).chain(gy1.iter().zip(&gy4)) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut out = [0.0; 1];
        assert!(pairwise(
            &[1.0],
            &[f64::INFINITY],
            Dims {
                tasks: 1,
                q: 1,
                n: 1,
                d: 1
            },
            Metric::Cosine,
            &mut out
        )
        .is_err());
        assert!(pairwise(
            &[1.0, 2.0],
            &[1.0],
            Dims {
                tasks: 1,
                q: 1,
                n: 1,
                d: 1
            },
            Metric::Cosine,
            &mut out
        )
        .is_err());
        assert!(pairwise::<f64>(
            &[],
            &[],
            Dims {
                tasks: 1,
                q: 0,
                n: 1,
                d: 1
            },
            Metric::Cosine,
            &mut out
        )
        .is_err());
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Interleaved A/B timing of the two small-shape forward strategies (best of rounds).
    #[test]
    #[ignore]
    fn time_episode_shape_parts() {
        let (b, q, n, d) = (32usize, 75usize, 5usize, 64usize);
        let x: Vec<f32> = (0..b * q * d).map(|i| (i % 19) as f32 * 0.1).collect();
        let y: Vec<f32> = (0..b * n * d).map(|i| (i % 13) as f32 * 0.1).collect();
        let mut out = vec![0f32; b * q * n];
        let tiled = |out: &mut [f32]| {
            for t in 0..b {
                let (xt, yt) = (
                    &x[t * q * d..(t + 1) * q * d],
                    &y[t * n * d..(t + 1) * n * d],
                );
                forward_block(
                    xt,
                    yt,
                    q,
                    n,
                    d,
                    Metric::SqEuclidean,
                    &mut out[t * q * n..(t + 1) * q * n],
                );
            }
        };
        let lanes = |out: &mut [f32]| {
            for t in 0..b {
                let (xt, yt) = (
                    &x[t * q * d..(t + 1) * q * d],
                    &y[t * n * d..(t + 1) * n * d],
                );
                for (o, xr) in out[t * q * n..(t + 1) * q * n]
                    .chunks_exact_mut(n)
                    .zip(xt.chunks_exact(d))
                {
                    for (v, yr) in o.iter_mut().zip(yt.chunks_exact(d)) {
                        *v = lane_sum(xr, yr, |a, b| (a - b) * (a - b));
                    }
                }
            }
        };
        let (mut best_t, mut best_l) = (f64::MAX, f64::MAX);
        for _ in 0..15 {
            let t = std::time::Instant::now();
            for _ in 0..200 {
                tiled(&mut out);
            }
            best_t = best_t.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
            let t = std::time::Instant::now();
            for _ in 0..200 {
                lanes(&mut out);
            }
            best_l = best_l.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
        }
        eprintln!("tiled (avx2 dispatch) {best_t:.1} us, lane_sum per pair (sse2) {best_l:.1} us");
        let s = 25;
        let sup: Vec<f32> = (0..b * s * d).map(|i| (i % 17) as f32 * 0.1).collect();
        let labels: Vec<i64> = (0..b * s).map(|i| (i % n) as i64).collect();
        let ed = EpisodeDims {
            tasks: b,
            support: s,
            query: q,
            dim: d,
            ways: n,
        };
        let mut protos = vec![0f32; b * n * d];
        let grad = vec![1f32; b * q * n];
        let (mut gs, mut gq) = (vec![0f32; b * s * d], vec![0f32; b * q * d]);
        let (mut best_f, mut best_b) = (f64::MAX, f64::MAX);
        for _ in 0..10 {
            let t = std::time::Instant::now();
            for _ in 0..200 {
                proto_distances(
                    &sup,
                    &labels,
                    &x,
                    ed,
                    Metric::SqEuclidean,
                    &mut out,
                    &mut protos,
                )
                .unwrap();
            }
            best_f = best_f.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
            let t = std::time::Instant::now();
            for _ in 0..200 {
                proto_distances_backward(
                    &sup,
                    &labels,
                    &x,
                    &protos,
                    &grad,
                    ed,
                    Metric::SqEuclidean,
                    &mut gs,
                    &mut gq,
                )
                .unwrap();
            }
            best_b = best_b.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
        }
        eprintln!("proto_distances {best_f:.1} us, backward {best_b:.1} us");
    }
}
