//! Helpers shared by the unit tests.

use crate::conv_block::BlockShape;

/// A linear congruential generator's next value, uniform in `[-1, 1)`.
pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Asserts that every `analytic[k][i]` is the central difference of `loss` in
/// `params[k][i]` (step 1e-4, small enough to stay off the ReLU's and the pooling's kinks)
/// within `2e-3 (1 + |numeric|)`.
pub(crate) fn assert_numeric_gradients<const N: usize>(
    params: &mut [Vec<f32>; N],
    analytic: [&[f32]; N],
    loss: impl Fn(&[Vec<f32>; N]) -> f64,
    what: &str,
) {
    let h = 1e-4f32;
    for which in 0..N {
        for i in 0..params[which].len() {
            let orig = params[which][i];
            params[which][i] = orig + h;
            let up = loss(params);
            params[which][i] = orig - h;
            let down = loss(params);
            params[which][i] = orig;
            let numeric = (up - down) / (2.0 * h as f64);
            let got = analytic[which][i] as f64;
            assert!(
                (got - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
                "param {which}[{i}]: {got} vs {numeric} ({what})"
            );
        }
    }
}

/// A plain 3x3 convolution with padding 1 and `stride`, in f64: `(N, C, H', W')` with
/// `H' = (H - 1) / stride + 1`, and `(H', W')`.
pub(crate) fn conv3x3_f64(
    x: &[f32],
    sh: BlockShape,
    weight: &[f32],
    bias: &[f32],
    stride: usize,
) -> (Vec<f64>, (usize, usize)) {
    let (k, cc) = (sh.k(), sh.c);
    let (oh, ow) = ((sh.h - 1) / stride + 1, (sh.w - 1) / stride + 1);
    let mut z = vec![0f64; sh.n * cc * oh * ow];
    for n in 0..sh.n {
        for c in 0..cc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[c] as f64;
                    for t in 0..k {
                        let (ci, dy, dx) = (t / 9, (t / 3) % 3, t % 3);
                        let yy = (stride * oy + dy) as isize - 1;
                        let xx = (stride * ox + dx) as isize - 1;
                        if yy >= 0 && xx >= 0 && (yy as usize) < sh.h && (xx as usize) < sh.w {
                            let v =
                                x[((n * sh.cin + ci) * sh.h + yy as usize) * sh.w + xx as usize];
                            acc += weight[c * k + t] as f64 * v as f64;
                        }
                    }
                    z[((n * cc + c) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (z, (oh, ow))
}
