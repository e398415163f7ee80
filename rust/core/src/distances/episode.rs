//! Mean prototypes and their distances to the queries in one pass per episode, and the
//! backward of both, for episode-sized shapes.

use rayon::prelude::*;

use super::backward::backward_task;
use super::*;
use crate::prototypes::{check_labels, mean_backward_task, mean_task, Shape};

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
    if protos.len() != tasks * ways * d {
        return value_err(format!(
            "protos: expected {} values ({tasks} x {ways} x {d}), got {}",
            tasks * ways * d,
            protos.len()
        ));
    }
    check_finite(protos, "protos")?;
    if g_support.len() != support.len() || g_query.len() != query.len() {
        return value_err("g_support/g_query: wrong sizes");
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
