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
    acc.iter().fold(tail, |s, &v| s + v)
}

#[inline(always)]
fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    lane_sum(a, b, |x, y| x * y)
}

#[inline(always)]
fn sq_dist<F: Real>(a: &[F], b: &[F]) -> F {
    lane_sum(a, b, |x, y| (x - y) * (x - y))
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
    match metric {
        Metric::SqEuclidean if q * n * d < GEMM_MIN_WORK => {
            for (o, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(d)) {
                for (v, yr) in o.iter_mut().zip(y.chunks_exact(d)) {
                    *v = sq_dist(xr, yr);
                }
            }
        }
        Metric::SqEuclidean => {
            gram(x, y, q, n, d, out);
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
            gram(x, y, q, n, d, out);
            let (ix, iy) = (inv_norms(x, d), inv_norms(y, d));
            for (o, &a) in out.chunks_exact_mut(n).zip(&ix) {
                for (v, &b) in o.iter_mut().zip(&iy) {
                    *v = F::one() - *v * a * b;
                }
            }
        }
    }
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

/// One task's backward: `grad (q, n)` to `gx (q, d)` and `gy (n, d)`.
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
) {
    match metric {
        Metric::SqEuclidean => {
            // gx = 2 (rowsum(g) x - g y), gy = 2 (colsum(g) y - g^T x)
            let two = F::one() + F::one();
            let neg2 = -two;
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
            F::gemm(
                q,
                n,
                d,
                neg2,
                grad,
                n as isize,
                1,
                y,
                d as isize,
                1,
                F::one(),
                gx,
                d as isize,
            );
            for (j, (g, yr)) in gy.chunks_exact_mut(d).zip(y.chunks_exact(d)).enumerate() {
                let s = two * (0..q).fold(F::zero(), |a, i| a + grad[i * n + j]);
                for (o, &v) in g.iter_mut().zip(yr) {
                    *o = s * v;
                }
            }
            F::gemm(
                n,
                q,
                d,
                neg2,
                grad,
                1,
                n as isize,
                x,
                d as isize,
                1,
                F::one(),
                gy,
                d as isize,
            );
        }
        Metric::Cosine => {
            // dist = 1 - xh.yh with xh = x / max(|x|, eps): gxh = -g yh, gyh = -g^T xh.
            let (ix, iy) = (inv_norms(x, d), inv_norms(y, d));
            let xh: Vec<F> = x
                .chunks_exact(d)
                .zip(&ix)
                .flat_map(|(r, &s)| r.iter().map(move |&v| v * s))
                .collect();
            let yh: Vec<F> = y
                .chunks_exact(d)
                .zip(&iy)
                .flat_map(|(r, &s)| r.iter().map(move |&v| v * s))
                .collect();
            F::gemm(
                q,
                n,
                d,
                -F::one(),
                grad,
                n as isize,
                1,
                &yh,
                d as isize,
                1,
                F::zero(),
                gx,
                d as isize,
            );
            F::gemm(
                n,
                q,
                d,
                -F::one(),
                grad,
                1,
                n as isize,
                &xh,
                d as isize,
                1,
                F::zero(),
                gy,
                d as isize,
            );
            project_normalize(x, &xh, &ix, d, gx);
            project_normalize(y, &yh, &iy, d, gy);
        }
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
        let task = |(t, (gxt, gyt)): (usize, (&mut [F], &mut [F]))| {
            let (xt, yt) = (
                &x[t * q * d..(t + 1) * q * d],
                &y[t * n * d..(t + 1) * n * d],
            );
            let gt = &grad[t * q * n..(t + 1) * q * n];
            backward_task(xt, yt, gt, q, n, d, metric, gxt, gyt)
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
        );
        let (lt, ct) = (
            &labels[t * s..(t + 1) * s],
            &counts[t * ways..(t + 1) * ways],
        );
        mean_backward_task(g_proto, lt, ct, d, gs);
    };
    pool::install_for(tasks * q * ways * d, |par| {
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

    #[test]
    #[ignore]
    fn time_small_episode_shapes() {
        let (b, q, n, d) = (32usize, 75usize, 5usize, 64usize);
        let x: Vec<f32> = (0..b * q * d).map(|i| (i % 17) as f32 * 0.1).collect();
        let y: Vec<f32> = (0..b * n * d).map(|i| (i % 13) as f32 * 0.1).collect();
        let mut out = vec![0f32; b * q * n];
        let dims = Dims { tasks: b, q, n, d };
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..1000 {
                pairwise(&x, &y, dims, Metric::SqEuclidean, &mut out).unwrap();
            }
            let t1 = t.elapsed().as_secs_f64() * 1e3;
            let t = std::time::Instant::now();
            for _ in 0..1000 {
                check_finite(&x, "x").unwrap();
            }
            let t2 = t.elapsed().as_secs_f64() * 1e3;
            let t = std::time::Instant::now();
            for _ in 0..1000 {
                pairwise_unchecked(&x, &y, dims, Metric::SqEuclidean, &mut out);
            }
            let t3 = t.elapsed().as_secs_f64() * 1e3;
            eprintln!("pairwise {t1:.1} us, check_finite(x) {t2:.1} us, unchecked {t3:.1} us");
        }
    }
}
