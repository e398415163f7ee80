//! Squared-Euclidean and cosine distances between `(B, Q, D)` and `(B, N, D)`, their backward
//! passes, and fused mean-prototypes + distances for episodes.
//!
//! Small tasks take a direct loop (exact, no cancellation); larger ones a GEMM from
//! `matrixmultiply` with the norms added (as torch.cdist does). Work is split over tasks and,
//! when there are fewer tasks than threads, over blocks of query rows.
//!
//! This file holds the forward kernels and [`pairwise`]; `backward` the backward passes
//! ([`pairwise_backward`]); `episode` the fused prototypes + distances
//! ([`proto_distances`], [`proto_distances_backward`]).

use num_traits::Float;
use rayon::prelude::*;

use crate::error::{checked_product, value_err, Result};
use crate::pool;
use crate::prototypes::check_finite;

mod backward;
mod episode;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing;

pub use backward::pairwise_backward;
pub use episode::{proto_distances, proto_distances_backward, EpisodeDims};

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
    // Both float types hold it: the fallback is never taken.
    let eps = F::from(COSINE_EPS).unwrap_or_else(F::epsilon);
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
