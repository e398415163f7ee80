//! Timing of the episode-shaped paths (ignored; run with `--ignored --nocapture`).

use super::*;

/// Interleaved A/B timing of the two small-shape forward strategies (best of rounds), then
/// of the fused episode kernel and its backward.
#[test]
#[ignore]
fn time_episode_shape_parts() {
    let (b, q, n, d) = (32usize, 75usize, 5usize, 64usize);
    let x: Vec<f32> = (0..b * q * d).map(|i| (i % 19) as f32 * 0.1).collect();
    let y: Vec<f32> = (0..b * n * d).map(|i| (i % 13) as f32 * 0.1).collect();
    let mut out = vec![0f32; b * q * n];
    time_forward_strategies(&x, &y, [b, q, n, d], &mut out);
    time_proto_distances(&x, [b, q, n, d], &mut out);
}

/// The tiled forward against one lane sum per pair, on `b` tasks of `q x n` distances.
fn time_forward_strategies(x: &[f32], y: &[f32], [b, q, n, d]: [usize; 4], out: &mut [f32]) {
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
            tiled(out);
        }
        best_t = best_t.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
        let t = std::time::Instant::now();
        for _ in 0..200 {
            lanes(out);
        }
        best_l = best_l.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
    }
    eprintln!("tiled (avx2 dispatch) {best_t:.1} us, lane_sum per pair (sse2) {best_l:.1} us");
}

/// [`proto_distances`] and its backward on `b` episodes of 25 supports and the queries `x`.
fn time_proto_distances(x: &[f32], [b, q, n, d]: [usize; 4], out: &mut [f32]) {
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
            proto_distances(&sup, &labels, x, ed, Metric::SqEuclidean, out, &mut protos).unwrap();
        }
        best_f = best_f.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
        let t = std::time::Instant::now();
        for _ in 0..200 {
            proto_distances_backward(
                &sup,
                &labels,
                x,
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
