//! The corruptions' randomness: one xoshiro256++ generator per item ([`ItemRng`]), seeded
//! from a stream's key ([`StreamKey`]: ChaCha8 keyed by the seed, on the stream of the
//! sampler's episode) with the item mixed in, and its normal draws (a table of quantiles).

use std::sync::OnceLock;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// xoshiro256++ (Blackman & Vigna): a few cycles per 64 bits.
#[derive(Debug, Clone)]
pub struct ItemRng {
    s: [u64; 4],
}

impl ItemRng {
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `0..n` (n >= 1), by multiply-shift.
    pub(super) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A standard normal, quantised to 4096 levels.
    pub(super) fn normal(&mut self) -> f32 {
        normal_table()[(self.next_u64() >> 52) as usize]
    }
}

/// The randomness of one stream (a sampler episode, or one `corrupt_batch` call): 32 bytes
/// of ChaCha8 keyed by `(seed, "corrupt")` on stream `stream`, drawn once and shared by the
/// stream's items.
#[derive(Debug, Clone)]
pub struct StreamKey([u64; 4]);

impl StreamKey {
    pub fn new(seed: u64, stream: u64) -> Self {
        // Keyed apart from the sampler's own draws (which use seed_from_u64(seed)).
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(b"corrupt\0");
        let mut chacha = ChaCha8Rng::from_seed(key);
        chacha.set_stream(stream);
        Self([0; 4].map(|_| chacha.next_u64()))
    }

    /// The generator of item `item`: the key with `item` mixed in (SplitMix64's finaliser),
    /// a few nanoseconds instead of a ChaCha block per item.
    pub fn item(&self, item: u64) -> ItemRng {
        let mut s = [0u64; 4];
        for (m, (v, k)) in s.iter_mut().zip(self.0).enumerate() {
            let mut z = k ^ item
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(m as u64);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *v = z ^ (z >> 31);
        }
        if s == [0; 4] {
            s[0] = 1; // xoshiro's one forbidden state
        }
        ItemRng { s }
    }
}

/// The generator of item `item` of stream `stream` (the episode) under `seed`.
pub fn item_rng(seed: u64, stream: u64, item: u64) -> ItemRng {
    StreamKey::new(seed, stream).item(item)
}

/// Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
pub(super) fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Midpoint quantiles of N(0, 1) at 4096 levels, rescaled to unit variance: a normal draw
/// is one table look-up of 12 random bits (the tails stop at about 3.6).
fn normal_table() -> &'static [f32; 4096] {
    static TABLE: OnceLock<Box<[f32; 4096]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let q: Vec<f64> = (0..4096)
            .map(|k| inverse_normal_cdf((k as f64 + 0.5) / 4096.0))
            .collect();
        let var = q.iter().map(|v| v * v).sum::<f64>() / 4096.0;
        let scale = 1.0 / var.sqrt();
        let mut t = Box::new([0f32; 4096]);
        for (t, v) in t.iter_mut().zip(&q) {
            *t = (v * scale) as f32;
        }
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_table_is_standard() {
        let t = normal_table();
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / 4096.0;
        let var = t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 4096.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
        assert!((inverse_normal_cdf(0.975) - 1.959964).abs() < 1e-5);
        assert!((inverse_normal_cdf(0.001) + 3.090232).abs() < 1e-5);
    }
}
