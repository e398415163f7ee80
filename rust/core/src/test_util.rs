//! Helpers shared by the unit tests.

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
