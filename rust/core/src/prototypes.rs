//! Class prototypes from support embeddings: mean, coordinate-wise median, trimmed mean and
//! geometric median, single task `(S, D)` or batched `(B, S, D)`, labels in any order.
//! Robust aggregation runs in f64 whatever the storage type, then rounds once.

use num_traits::Float;
use rayon::prelude::*;

use crate::error::{checked_product, value_err, Result};
use crate::memory::try_vec;
use crate::pool;

/// How the support items of one class become its prototype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Mean,
    /// Per coordinate; the average of the two middle values for an even count (as NumPy).
    Median,
    /// Per coordinate, drop `floor(trim * n)` values at each end (as scipy's trim_mean).
    TrimmedMean {
        trim: f64,
    },
    /// Weiszfeld iterations with the Vardi-Zhang step when the estimate sits on a point.
    GeometricMedian {
        tol: f64,
        max_iter: usize,
    },
}

impl Method {
    pub fn check(&self) -> Result<()> {
        match *self {
            Method::TrimmedMean { trim } if !(0.0..0.5).contains(&trim) => {
                value_err(format!("trim: must be in [0, 0.5), got {trim}"))
            }
            Method::GeometricMedian { tol, .. } if !(tol.is_finite() && tol > 0.0) => {
                value_err(format!("tol: must be finite and > 0, got {tol}"))
            }
            Method::GeometricMedian { max_iter: 0, .. } => {
                value_err("max_iter: must be >= 1, got 0")
            }
            _ => Ok(()),
        }
    }
}

/// `(B, S, D)` embeddings grouped into `ways` classes per task.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub tasks: usize,
    pub support: usize,
    pub dim: usize,
    pub ways: usize,
}

/// Rejects NaN and infinity, naming the argument and the first bad position.
pub fn check_finite<F: Float>(x: &[F], name: &str) -> Result<()> {
    // `v * 0` is NaN exactly for NaN and inf; summing in lanes vectorises, unlike a search.
    let mut acc = [F::zero(); 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(F::zero(), |s, &v| s + v * F::zero());
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = *a + v * F::zero();
        }
    }
    if acc.iter().fold(tail, |s, &v| s + v).is_nan() {
        let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return value_err(format!(
            "{name}: holds NaN or inf (first at flat index {i})"
        ));
    }
    Ok(())
}

/// Checks labels lie in `0..ways` and every class of every task has an item;
/// returns the per-task, per-class item counts.
pub fn check_labels(labels: &[i64], shape: Shape) -> Result<Vec<usize>> {
    let Shape {
        tasks,
        support,
        ways,
        ..
    } = shape;
    if ways == 0 {
        return value_err("ways: must be >= 1, got 0");
    }
    // Every class needs an item: this also bounds the counts (and outputs) by the labels.
    if ways > support {
        return value_err(format!(
            "ways: {ways} classes need at least {ways} support items per task, got {support}"
        ));
    }
    let expected = checked_product(&[tasks, support], "labels")?;
    if labels.len() != expected {
        return value_err(format!(
            "labels: expected {expected} values ({tasks} tasks x {support} items), got {}",
            labels.len()
        ));
    }
    let mut counts = try_vec(tasks * ways, 0usize, "labels")?;
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= ways {
            return value_err(format!(
                "labels: values must be in 0..{ways}, got {l} at index {i}"
            ));
        }
        counts[(i / support) * ways + l as usize] += 1;
    }
    if let Some(k) = counts.iter().position(|&c| c == 0) {
        return value_err(format!(
            "labels: task {} has no support item of class {} (every class 0..{ways} needs one)",
            k / ways,
            k % ways
        ));
    }
    Ok(counts)
}

fn check_shape<F>(emb: &[F], shape: Shape) -> Result<()> {
    let Shape {
        tasks,
        support,
        dim,
        ..
    } = shape;
    if tasks == 0 || support == 0 || dim == 0 {
        return value_err(format!(
            "emb: needs a non-empty (tasks, support, dim) shape, got ({tasks}, {support}, {dim})"
        ));
    }
    match tasks.checked_mul(support).and_then(|v| v.checked_mul(dim)) {
        Some(n) if n == emb.len() => Ok(()),
        _ => value_err(format!(
            "emb: expected {tasks} x {support} x {dim} values, got {}",
            emb.len()
        )),
    }
}

fn aggregate(rows: &[&[f64]], dim: usize, method: Method, out: &mut [f64]) {
    let n = rows.len();
    match method {
        Method::Mean => {
            out.fill(0.0);
            for r in rows {
                for (o, v) in out.iter_mut().zip(r.iter()) {
                    *o += v;
                }
            }
            out.iter_mut().for_each(|o| *o /= n as f64);
        }
        Method::Median | Method::TrimmedMean { .. } => order_statistic(rows, dim, method, out),
        Method::GeometricMedian { tol, max_iter } => {
            geometric_median(rows, dim, tol, max_iter, out)
        }
    }
}

/// The median or the trimmed mean of each coordinate of `rows`.
fn order_statistic(rows: &[&[f64]], dim: usize, method: Method, out: &mut [f64]) {
    let n = rows.len();
    let cut = match method {
        Method::TrimmedMean { trim } => (trim * n as f64).floor() as usize,
        _ => 0,
    };
    let mut col = vec![0f64; n];
    for (j, o) in out.iter_mut().enumerate().take(dim) {
        for (c, r) in col.iter_mut().zip(rows) {
            *c = r[j];
        }
        col.sort_unstable_by(|a, b| a.total_cmp(b));
        *o = if matches!(method, Method::Median) {
            if n % 2 == 1 {
                col[n / 2]
            } else {
                0.5 * (col[n / 2 - 1] + col[n / 2])
            }
        } else {
            let kept = &col[cut..n - cut];
            kept.iter().sum::<f64>() / kept.len() as f64
        };
    }
}

/// The geometric median of `rows` by Weiszfeld's iteration from their mean, until a step
/// is at most `tol` or after `max_iter` steps.
fn geometric_median(rows: &[&[f64]], dim: usize, tol: f64, max_iter: usize, out: &mut [f64]) {
    aggregate(rows, dim, Method::Mean, out);
    let mut next = vec![0f64; dim];
    let mut pull = vec![0f64; dim];
    for _ in 0..max_iter {
        next.fill(0.0);
        pull.fill(0.0);
        let (mut wsum, mut coincide) = (0.0, 0usize);
        for r in rows {
            let dist = r
                .iter()
                .zip(out.iter())
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            if dist <= f64::MIN_POSITIVE {
                coincide += 1;
                continue;
            }
            let w = 1.0 / dist;
            wsum += w;
            for ((nx, p), (a, b)) in next
                .iter_mut()
                .zip(pull.iter_mut())
                .zip(r.iter().zip(out.iter()))
            {
                *nx += w * a;
                *p += w * (a - b);
            }
        }
        if wsum == 0.0 {
            break; // every point equals the estimate
        }
        next.iter_mut().for_each(|v| *v /= wsum);
        if coincide > 0 {
            // Vardi & Zhang (2000): blend towards the estimate by eta / |R|.
            let r_norm = pull.iter().map(|v| v * v).sum::<f64>().sqrt();
            let t = if r_norm > 0.0 {
                (coincide as f64 / r_norm).min(1.0)
            } else {
                1.0
            };
            for (nx, m) in next.iter_mut().zip(out.iter()) {
                *nx = (1.0 - t) * *nx + t * m;
            }
        }
        let step = next
            .iter()
            .zip(out.iter())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        out.copy_from_slice(&next);
        if step <= tol {
            break;
        }
    }
}

/// Prototypes `out (B, ways, D)` of `emb (B, S, D)` with `labels (B, S)`.
pub fn prototypes<F: Float + Send + Sync>(
    emb: &[F],
    labels: &[i64],
    shape: Shape,
    method: Method,
    out: &mut [F],
) -> Result<()> {
    check_shape(emb, shape)?;
    method.check()?;
    check_labels(labels, shape)?;
    check_finite(emb, "emb")?;
    let Shape {
        support, dim, ways, ..
    } = shape;
    if Some(out.len()) != shape.tasks.checked_mul(ways * dim) {
        return value_err("out: wrong size for (tasks, ways, dim)");
    }
    if method == Method::Mean {
        let task = |counts: &mut Vec<usize>, (t, p): (usize, &mut [F])| {
            let lt = &labels[t * support..(t + 1) * support];
            mean_task(
                &emb[t * support * dim..(t + 1) * support * dim],
                lt,
                dim,
                ways,
                p,
                counts,
            )
        };
        pool::install_for(emb.len(), |par| {
            if par {
                let counts = || vec![0usize; ways];
                out.par_chunks_mut(ways * dim)
                    .enumerate()
                    .for_each_init(counts, task)
            } else {
                let mut counts = vec![0usize; ways];
                out.chunks_mut(ways * dim)
                    .enumerate()
                    .for_each(|item| task(&mut counts, item))
            }
        });
        return Ok(());
    }
    let class = |(k, proto): (usize, &mut [F])| {
        let (t, c) = (k / ways, k % ways);
        let task = &emb[t * support * dim..(t + 1) * support * dim];
        let rows64: Vec<Vec<f64>> = labels[t * support..(t + 1) * support]
            .iter()
            .enumerate()
            .filter(|(_, &l)| l as usize == c)
            .map(|(i, _)| {
                task[i * dim..(i + 1) * dim]
                    .iter()
                    .map(|v| v.to_f64().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        let rows: Vec<&[f64]> = rows64.iter().map(|r| r.as_slice()).collect();
        let mut acc = vec![0f64; dim];
        aggregate(&rows, dim, method, &mut acc);
        for (p, v) in proto.iter_mut().zip(acc) {
            *p = F::from(v).unwrap_or_else(F::nan);
        }
    };
    // Robust aggregators cost many passes per item; count them as heavier work.
    let passes = if method == Method::Mean { 1 } else { 32 };
    pool::install_for(emb.len() * passes, |par| {
        if par {
            out.par_chunks_mut(dim).enumerate().for_each(class)
        } else {
            out.chunks_mut(dim).enumerate().for_each(class)
        }
    });
    Ok(())
}

/// Mean prototypes without the generic machinery: the hot path of training.
pub(crate) fn mean_task<F: Float>(
    emb: &[F],
    labels: &[i64],
    dim: usize,
    ways: usize,
    out: &mut [F],
    counts: &mut [usize],
) {
    out.iter_mut().for_each(|o| *o = F::zero());
    counts.iter_mut().for_each(|c| *c = 0);
    for (row, &l) in emb.chunks_exact(dim).zip(labels) {
        let c = l as usize;
        counts[c] += 1;
        for (o, &v) in out[c * dim..(c + 1) * dim].iter_mut().zip(row) {
            *o = *o + v;
        }
    }
    for (c, &n) in counts.iter().enumerate().take(ways) {
        let inv = F::one() / F::from(n).unwrap_or_else(F::one);
        out[c * dim..(c + 1) * dim]
            .iter_mut()
            .for_each(|o| *o = *o * inv);
    }
}

/// Backward of mean prototypes for one task: `grad_emb[s] = grad_out[label[s]] / count`.
pub(crate) fn mean_backward_task<F: Float>(
    grad_out: &[F],
    labels: &[i64],
    counts: &[usize],
    dim: usize,
    grad_emb: &mut [F],
) {
    for (row, &l) in grad_emb.chunks_exact_mut(dim).zip(labels) {
        let c = l as usize;
        let inv = F::one() / F::from(counts[c]).unwrap_or_else(F::one);
        for (g, &v) in row.iter_mut().zip(&grad_out[c * dim..(c + 1) * dim]) {
            *g = v * inv;
        }
    }
}

/// Gradient of mean prototypes: `grad_out (B, ways, D)` to `grad_emb (B, S, D)`.
pub fn mean_backward<F: Float + Send + Sync>(
    grad_out: &[F],
    labels: &[i64],
    shape: Shape,
    grad_emb: &mut [F],
) -> Result<()> {
    let Shape {
        tasks,
        support,
        dim,
        ways,
    } = shape;
    if [tasks, ways, dim].contains(&0) {
        return value_err(format!(
            "grad_output: needs a non-empty (tasks, ways, dim) shape, got ({tasks}, {ways}, {dim})"
        ));
    }
    if support < ways {
        return value_err(format!(
            "support: {support} items per task cannot hold the {ways} classes of grad_output \
             (every class needs one)"
        ));
    }
    if Some(grad_out.len()) != checked_product(&[tasks, ways, dim], "grad_output").ok() {
        return value_err("grad_output: wrong size for (tasks, ways, dim)");
    }
    if Some(grad_emb.len()) != checked_product(&[tasks, support, dim], "support").ok() {
        return value_err("support: the gradient's size does not match (tasks, support, dim)");
    }
    let counts = check_labels(labels, shape)?;
    check_finite(grad_out, "grad_output")?;
    let task = |(t, ge): (usize, &mut [F])| {
        mean_backward_task(
            &grad_out[t * ways * dim..(t + 1) * ways * dim],
            &labels[t * support..(t + 1) * support],
            &counts[t * ways..(t + 1) * ways],
            dim,
            ge,
        )
    };
    pool::install_for(grad_emb.len(), |par| {
        if par {
            grad_emb
                .par_chunks_mut(support * dim)
                .enumerate()
                .for_each(task)
        } else {
            grad_emb
                .chunks_mut(support * dim)
                .enumerate()
                .for_each(task)
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(emb: &[f64], labels: &[i64], s: usize, d: usize, ways: usize, m: Method) -> Vec<f64> {
        let mut out = vec![0.0; ways * d];
        prototypes(
            emb,
            labels,
            Shape {
                tasks: 1,
                support: s,
                dim: d,
                ways,
            },
            m,
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn median_and_trimmed_match_hand_values() {
        let emb = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 100.0, 40.0];
        let labels = [0, 0, 0, 0];
        assert_eq!(one(&emb, &labels, 4, 2, 1, Method::Median), vec![2.5, 25.0]);
        assert_eq!(
            one(&emb, &labels, 4, 2, 1, Method::TrimmedMean { trim: 0.25 }),
            vec![2.5, 25.0]
        );
        assert_eq!(one(&emb, &labels, 4, 2, 1, Method::Mean), vec![26.5, 25.0]);
    }

    #[test]
    fn geometric_median_resists_an_outlier_and_handles_coincidence() {
        let emb = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1000.0, 1000.0];
        let gm = one(
            &emb,
            &[0; 5],
            5,
            2,
            1,
            Method::GeometricMedian {
                tol: 1e-12,
                max_iter: 1000,
            },
        );
        assert!(gm.iter().all(|v| (0.0..1.5).contains(v)), "{gm:?}");
        // Three equal points out of four: the geometric median is that point.
        let emb = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 5.0, 9.0];
        let gm = one(
            &emb,
            &[0; 4],
            4,
            2,
            1,
            Method::GeometricMedian {
                tol: 1e-12,
                max_iter: 1000,
            },
        );
        assert!(
            (gm[0] - 2.0).abs() < 1e-9 && (gm[1] - 2.0).abs() < 1e-9,
            "{gm:?}"
        );
    }

    #[test]
    fn bad_labels_are_errors() {
        let s = Shape {
            tasks: 1,
            support: 2,
            dim: 1,
            ways: 2,
        };
        let mut out = [0.0; 2];
        assert!(prototypes(&[1.0, 2.0], &[0, 0], s, Method::Mean, &mut out)
            .unwrap_err()
            .to_string()
            .contains("class 1"));
        assert!(prototypes(&[1.0, 2.0], &[0, 2], s, Method::Mean, &mut out).is_err());
        assert!(prototypes(&[1.0, f64::NAN], &[0, 1], s, Method::Mean, &mut out).is_err());
        assert!(prototypes(
            &[1.0, 2.0],
            &[0, 1],
            s,
            Method::TrimmedMean { trim: 0.5 },
            &mut out
        )
        .is_err());
    }

    #[test]
    fn mean_backward_rejects_empty_shapes_nan_and_too_many_classes() {
        let shape = |support, dim, ways| Shape {
            tasks: 1,
            support,
            dim,
            ways,
        };
        let err = |r: Result<()>| r.unwrap_err().to_string();
        let mut g = [0.0f64; 4];
        assert!(
            err(mean_backward::<f64>(&[], &[0, 1], shape(2, 0, 2), &mut []))
                .starts_with("grad_output:")
        );
        assert!(
            err(mean_backward(&[1.0; 6], &[0, 1], shape(2, 2, 3), &mut g)).starts_with("support:")
        );
        assert!(err(mean_backward(
            &[1.0, f64::NAN, 1.0, 1.0],
            &[0, 1],
            shape(2, 2, 2),
            &mut g
        ))
        .starts_with("grad_output: holds NaN"));
        assert!(mean_backward(&[1.0; 4], &[0, 1], shape(2, 2, 2), &mut g).is_ok());
        let mut out = [0.0; 2];
        let big = Shape {
            ways: 1 << 40,
            ..shape(2, 1, 1)
        };
        assert!(err(prototypes(
            &[1.0, 2.0],
            &[0, 1],
            big,
            Method::Mean,
            &mut out
        ))
        .starts_with("ways:"));
    }
}
