//! Tests of the distances against naive sums and finite differences.

use super::backward::backward_task;
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

#[test]
fn proto_distances_backward_rejects_non_finite_prototypes() {
    let dims = EpisodeDims {
        tasks: 1,
        support: 2,
        query: 1,
        dim: 1,
        ways: 2,
    };
    let (mut gs, mut gq) = ([0.0; 2], [0.0; 1]);
    let run = |protos: &[f64], gs: &mut [f64], gq: &mut [f64]| {
        let (s, l, q, g) = ([1.0, 2.0], [0, 1], [0.5], [1.0, 1.0]);
        proto_distances_backward(&s, &l, &q, protos, &g, dims, Metric::SqEuclidean, gs, gq)
    };
    assert!(run(&[1.0, 2.0], &mut gs, &mut gq).is_ok());
    let err = run(&[1.0, f64::NAN], &mut gs, &mut gq).unwrap_err();
    assert!(err.to_string().starts_with("protos: holds NaN"), "{err}");
}
