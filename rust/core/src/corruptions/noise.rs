//! The per-pixel noises: Gaussian noise in whole grey levels and impulse noise, on floats and
//! on bytes.
//!
//! A pixel's randomness is 16 bits of a step of [`PixelRng`], eight xoshiro256++ generators
//! in lock step: 512 bits, 32 pixels in order. The float paths run with AVX2 (inside the
//! corruptions' AVX2 function); the byte paths, which the sampler's uint8 output and byte
//! datasets go through, with AVX-512 (BW and VL: one register a step, masked tails) where
//! the processor has it, else AVX2. Every path gives the same values (tested).

use super::rng::ItemRng;
use crate::pixel::levels_to_unit;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Gaussian noise's standard normal draws: a pixel's 16 random bits are four 4-bit indices
/// into this symmetric table, and the sum of the four values, divided by its standard
/// deviation [`noise_sum_sd`], stands for N(0, 1). The values were fitted so that the sum
/// matches the normal's CDF (largest difference 0.0033 at the midpoints between its 241
/// values), kurtosis (2.98) and tail (P(|z| > 3) 0.00272 against 0.00270); |z| <= 4.18.
/// Four nibble lookups need no gather: a byte shuffle makes 32 (AVX2) or 64 (AVX-512).
pub(super) const NOISE_NIBBLE: [i8; 16] = [
    -63, -40, -29, -22, -15, -10, -7, -2, 2, 7, 10, 15, 22, 29, 40, 63,
];

/// The standard deviation of a sum of four [`NOISE_NIBBLE`] draws: sqrt(4 * 909).
pub(super) fn noise_sum_sd() -> f32 {
    3636f32.sqrt()
}

/// [`NOISE_NIBBLE`] in whole grey levels (1/255) for noise of std `std`: scaled by the
/// factor (within 10% of the exact one) whose rounded table's four-draw sum comes nearest
/// that std (within 0.5%). The noise is then a whole number of levels, so a noisy byte is
/// the byte plus an integer: the byte path needs no float round trip and gives the float
/// path's values exactly.
pub(super) fn noise_levels(std: f32) -> [i8; 16] {
    let target = 255.0 * std as f64;
    let base = target / noise_sum_sd() as f64;
    let scaled = |c: f64| NOISE_NIBBLE.map(|v| (v as f64 * c).round() as i8);
    let sd =
        |t: &[i8; 16]| (4.0 * t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 16.0).sqrt();
    (-1000..=1000)
        .map(|i| scaled(base * (1.0 + i as f64 * 1e-4)))
        .min_by(|a, b| (sd(a) - target).abs().total_cmp(&(sd(b) - target).abs()))
        .expect("candidates")
}

/// The sum of the four values of `table` that a pixel's 16-bit draw indexes.
#[inline(always)]
pub(super) fn noise_sum(table: &[i8; 16], draw: u32) -> i32 {
    (0..4)
        .map(|j| table[((draw >> (4 * j)) & 0xF) as usize] as i32)
        .sum()
}

/// Impulse noise hits the pixels whose draw's top 15 bits are below this.
pub(super) fn impulse_threshold(amount: f32) -> u32 {
    (amount * 32768.0).round() as u32
}

/// Generators of [`PixelRng`].
const RNG_LANES: usize = 8;
/// Pixels per step of [`PixelRng`]: 16 bits each.
pub(super) const PIXELS_PER_STEP: usize = 32;

/// Eight xoshiro256++ generators in lock step, for per-pixel draws: word `w` of generator
/// `l` is `s[w][l]`, so one step is a handful of vector instructions for 512 random bits.
/// Seeded by SplitMix64 (xoshiro's recommended seeding) from one draw of the item's
/// generator.
#[derive(Debug, Clone)]
pub(super) struct PixelRng {
    s: [[u64; RNG_LANES]; 4],
}

impl PixelRng {
    pub(super) fn new(rng: &mut ItemRng) -> Self {
        let mut x = rng.next_u64();
        let mut s = [[0u64; RNG_LANES]; 4];
        for v in s.iter_mut().flatten() {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *v = z ^ (z >> 31);
        }
        for lane in 0..RNG_LANES {
            if s.iter().all(|word| word[lane] == 0) {
                s[0][lane] = 1; // xoshiro's one forbidden state
            }
        }
        Self { s }
    }

    /// One step: the generators' outputs as 16 32-bit words, generator `l`'s low half at
    /// `2l` and high half at `2l + 1` (the order of a vector register's 32-bit lanes).
    #[inline(always)]
    pub(super) fn next_words(&mut self) -> [u32; 16] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut words = [0u32; 16];
        for l in 0..RNG_LANES {
            let out = s0[l]
                .wrapping_add(s3[l])
                .rotate_left(23)
                .wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
            words[2 * l] = out as u32;
            words[2 * l + 1] = (out >> 32) as u32;
        }
        words
    }
}

/// The 16-bit draw of pixel `k` (`0..32`) of a step: the `k`-th 16-bit half-word of the
/// step's words, so that vector lanes hold the pixels in order.
#[inline(always)]
pub(super) fn draw16(words: &[u32; 16], k: usize) -> u32 {
    (words[k / 2] >> (16 * (k % 2))) & 0xFFFF
}

/// The instructions a noise runs with, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// The best the processor offers for the byte paths.
    pub(super) fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// `self`, or what the processor offers if that is less (so that no path runs without
    /// its instructions).
    fn available(self) -> Isa {
        self.min(Isa::detected())
    }
}

/// `pixel(value, index, draw)` on every pixel of `img`, step by step.
#[inline(always)]
fn steps_portable<T>(
    img: &mut [T],
    draws: &mut PixelRng,
    mut pixel: impl FnMut(&mut T, usize, u32),
) {
    for (c, chunk) in img.chunks_mut(PIXELS_PER_STEP).enumerate() {
        let words = draws.next_words();
        for (k, v) in chunk.iter_mut().enumerate() {
            pixel(v, c * PIXELS_PER_STEP + k, draw16(&words, k));
        }
    }
}

/// `x + N(0, std^2)` per pixel in whole grey levels: `(255 x + d) / 255` with `d` the sum
/// of four [`noise_levels`] values, so that a byte image `b / 255` gets `(b + d) / 255`
/// exactly (what [`gaussian_noise_bytes`] gives, rounded).
#[inline(always)]
pub(super) fn gaussian_noise<const AVX2: bool>(
    img: &mut [f32],
    table: &[i8; 16],
    rng: &mut ItemRng,
) {
    let mut draws = PixelRng::new(rng);
    let pixel = |v: &mut f32, _: usize, d: u32| {
        *v = levels_to_unit(*v * 255.0 + noise_sum(table, d) as f32)
    };
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is available (AVX2 is only set inside the corruptions' AVX2 function).
        return unsafe { gaussian_noise_avx2(img, table, &mut draws, pixel) };
    }
    steps_portable(img, &mut draws, pixel);
}

/// Gaussian noise on bytes, `src` into `dst` (one image): `clamp(b + d, 0, 255)`, the float
/// path's values rounded (exactly: the float path is `(b + d) / 255` to the bit).
pub(super) fn gaussian_noise_bytes(
    src: &[u8],
    dst: &mut [u8],
    table: &[i8; 16],
    rng: &mut ItemRng,
    isa: Isa,
) {
    assert_eq!(src.len(), dst.len(), "one image in, one out");
    let mut draws = PixelRng::new(rng);
    let pixel = |o: &mut u8, i: usize, d: u32| {
        *o = (src[i] as i32 + noise_sum(table, d)).clamp(0, 255) as u8
    };
    #[cfg(target_arch = "x86_64")]
    match isa.available() {
        // SAFETY: the processor has the instructions (`available`).
        Isa::Avx512 => return unsafe { gaussian_noise_bytes_avx512(src, dst, table, &mut draws) },
        Isa::Avx2 => {
            return unsafe { gaussian_noise_bytes_avx2(src, dst, table, &mut draws, pixel) }
        }
        Isa::Portable => {}
    }
    let _ = isa;
    steps_portable(dst, &mut draws, pixel);
}

/// A fraction `amount` of the pixels set to 0 or 1: 15 bits of each pixel's 16-bit draw
/// pick whether it is hit, the 16th salt or pepper, so a higher amount hits a superset of
/// the pixels with the same values.
#[inline(always)]
pub(super) fn impulse_noise<const AVX2: bool>(img: &mut [f32], amount: f32, rng: &mut ItemRng) {
    let threshold = impulse_threshold(amount);
    let mut draws = PixelRng::new(rng);
    let pixel = |v: &mut f32, _: usize, d: u32| {
        if d >> 1 < threshold {
            *v = (d & 1) as f32;
        }
    };
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is available (AVX2 is only set inside the corruptions' AVX2 function).
        return unsafe { impulse_noise_avx2(img, threshold, &mut draws, pixel) };
    }
    steps_portable(img, &mut draws, pixel);
}

/// Impulse noise on bytes, `src` into `dst` (one image; salt is 255).
pub(super) fn impulse_noise_bytes(
    src: &[u8],
    dst: &mut [u8],
    amount: f32,
    rng: &mut ItemRng,
    isa: Isa,
) {
    assert_eq!(src.len(), dst.len(), "one image in, one out");
    let threshold = impulse_threshold(amount);
    let mut draws = PixelRng::new(rng);
    let pixel = |o: &mut u8, i: usize, d: u32| {
        *o = if d >> 1 < threshold {
            (d & 1) as u8 * 255
        } else {
            src[i]
        }
    };
    #[cfg(target_arch = "x86_64")]
    match isa.available() {
        // SAFETY: the processor has the instructions (`available`).
        Isa::Avx512 => {
            return unsafe { impulse_noise_bytes_avx512(src, dst, threshold, &mut draws) }
        }
        Isa::Avx2 => {
            return unsafe { impulse_noise_bytes_avx2(src, dst, threshold, &mut draws, pixel) }
        }
        Isa::Portable => {}
    }
    let _ = isa;
    steps_portable(dst, &mut draws, pixel);
}

/// A [`PixelRng`] in AVX2 registers: generators 0-3 (pixels 0-15 of a step) and 4-7.
#[cfg(target_arch = "x86_64")]
struct Lanes {
    lo: [__m256i; 4],
    hi: [__m256i; 4],
}

#[cfg(target_arch = "x86_64")]
impl Lanes {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(rng: &PixelRng) -> Self {
        // SAFETY: each word is eight u64: two registers of 32 bytes.
        let part = |at: usize| {
            rng.s
                .map(|w| unsafe { _mm256_loadu_si256(w[at..].as_ptr() as *const __m256i) })
        };
        Self {
            lo: part(0),
            hi: part(4),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(&self, rng: &mut PixelRng) {
        for (w, (lo, hi)) in rng.s.iter_mut().zip(self.lo.iter().zip(&self.hi)) {
            // SAFETY: each word is eight u64: two registers of 32 bytes.
            unsafe {
                _mm256_storeu_si256(w.as_mut_ptr() as *mut __m256i, *lo);
                _mm256_storeu_si256(w[4..].as_mut_ptr() as *mut __m256i, *hi);
            }
        }
    }

    /// [`PixelRng::next_words`] as two registers: pixels 0-15 and 16-31 of the step.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn next(&mut self) -> (__m256i, __m256i) {
        (xoshiro_avx2(&mut self.lo), xoshiro_avx2(&mut self.hi))
    }

    /// The words of a step, as [`PixelRng::next_words`] returns them.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn words(lo: __m256i, hi: __m256i) -> [u32; 16] {
        let mut words = [0u32; 16];
        // SAFETY: 16 words: two registers of 32 bytes.
        unsafe {
            _mm256_storeu_si256(words.as_mut_ptr() as *mut __m256i, lo);
            _mm256_storeu_si256(words[8..].as_mut_ptr() as *mut __m256i, hi);
        }
        words
    }
}

/// One xoshiro256++ step of four generators (a state word per register).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn xoshiro_avx2(s: &mut [__m256i; 4]) -> __m256i {
    let [s0, s1, s2, s3] = s;
    let sum = _mm256_add_epi64(*s0, *s3);
    let rot = _mm256_or_si256(_mm256_slli_epi64::<23>(sum), _mm256_srli_epi64::<41>(sum));
    let out = _mm256_add_epi64(rot, *s0);
    let t = _mm256_slli_epi64::<17>(*s1);
    *s2 = _mm256_xor_si256(*s2, *s0);
    *s3 = _mm256_xor_si256(*s3, *s1);
    *s1 = _mm256_xor_si256(*s1, *s2);
    *s0 = _mm256_xor_si256(*s0, *s3);
    *s2 = _mm256_xor_si256(*s2, t);
    *s3 = _mm256_or_si256(_mm256_slli_epi64::<45>(*s3), _mm256_srli_epi64::<19>(*s3));
    out
}

/// Runs an AVX2 noise over `img` step by step: `half(pixels, index, draws)` on every whole
/// 16 pixels of a step (the register holding their draws in 16-bit lanes, in order),
/// `pixel` on the pixels of a last partial half, from the same step's words.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn steps_avx2<T>(
    img: &mut [T],
    draws: &mut PixelRng,
    mut half: impl FnMut(&mut [T], usize, __m256i),
    mut pixel: impl FnMut(&mut T, usize, u32),
) {
    let mut state = Lanes::load(draws);
    for (c, step) in img.chunks_mut(PIXELS_PER_STEP).enumerate() {
        let at = c * PIXELS_PER_STEP;
        let (lo, hi) = state.next();
        if step.len() == PIXELS_PER_STEP {
            let (first, second) = step.split_at_mut(16);
            half(first, at, lo);
            half(second, at + 16, hi);
            continue;
        }
        let words = Lanes::words(lo, hi);
        let mut k = 0;
        if step.len() >= 16 {
            half(&mut step[..16], at, lo);
            k = 16;
        }
        for (j, v) in step.iter_mut().enumerate().skip(k) {
            pixel(v, at + j, draw16(&words, j));
        }
    }
    state.store(draws);
}

/// The per-pixel sums of 16 pixels' noise draws (16-bit lanes, in order), in 16-bit lanes.
/// Two byte shuffles look up the 64 nibbles; two multiply-adds of bytes sum each pixel's
/// four (in 16 bits: a scaled table's pair of values can leave the byte range).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn noise_sums_avx2(draws: __m256i, table: __m256i) -> __m256i {
    let nibble = _mm256_set1_epi8(0xF);
    let ones = _mm256_set1_epi8(1);
    let low = _mm256_shuffle_epi8(table, _mm256_and_si256(draws, nibble));
    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(draws), nibble);
    let high = _mm256_shuffle_epi8(table, high);
    _mm256_add_epi16(
        _mm256_maddubs_epi16(ones, low),
        _mm256_maddubs_epi16(ones, high),
    )
}

/// `table` in both 128-bit lanes (byte shuffles look up within lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn noise_table_avx2(table: &[i8; 16]) -> __m256i {
    // SAFETY: 16 bytes.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(table.as_ptr() as *const __m128i) })
}

/// `gaussian_noise` with AVX2 (the same integer sums and float operations: the same bits).
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gaussian_noise_avx2(
    img: &mut [f32],
    table: &[i8; 16],
    draws: &mut PixelRng,
    pixel: impl FnMut(&mut f32, usize, u32),
) {
    let table = noise_table_avx2(table);
    let (levels, inv, big) = (
        _mm256_set1_ps(255.0),
        _mm256_set1_ps(1.0 / 255.0),
        _mm256_set1_ps(256.0),
    );
    let to_unit = |k: __m256| {
        let q = _mm256_mul_ps(k, inv);
        let residual = _mm256_add_ps(_mm256_sub_ps(k, _mm256_mul_ps(q, big)), q);
        _mm256_add_ps(q, _mm256_mul_ps(residual, inv))
    };
    let half = |px: &mut [f32], _: usize, d: __m256i| {
        let sums = noise_sums_avx2(d, table);
        let first = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sums));
        let second = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(sums));
        for (at, d) in [(0, first), (8, second)] {
            // SAFETY: `px` holds 16 floats.
            unsafe {
                let p = px.as_mut_ptr().add(at);
                let x = _mm256_mul_ps(_mm256_loadu_ps(p), levels);
                _mm256_storeu_ps(p, to_unit(_mm256_add_ps(x, _mm256_cvtepi32_ps(d))));
            }
        }
    };
    // SAFETY: AVX2 is available (the caller's promise).
    unsafe { steps_avx2(img, draws, half, pixel) }
}

/// `gaussian_noise_bytes` with AVX2.
///
/// # Safety
/// AVX2 must be available; `src` and `dst` have one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gaussian_noise_bytes_avx2(
    src: &[u8],
    dst: &mut [u8],
    table: &[i8; 16],
    draws: &mut PixelRng,
    pixel: impl FnMut(&mut u8, usize, u32),
) {
    let table = noise_table_avx2(table);
    let half = |out: &mut [u8], at: usize, d: __m256i| {
        let sums = noise_sums_avx2(d, table);
        // SAFETY: 16 bytes of `src` from `at` (as `out`, a 16-byte part of `dst`).
        unsafe {
            let bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(src.as_ptr().add(at) as *const _));
            // The unsigned pack clamps to 0..=255: each lane's eight bytes, then both lanes'.
            let packed = _mm256_packus_epi16(_mm256_add_epi16(bytes, sums), sums);
            let both = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(packed));
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, both);
        }
    };
    // SAFETY: AVX2 is available (the caller's promise).
    unsafe { steps_avx2(dst, draws, half, pixel) }
}

/// `impulse_noise` with AVX2 blends.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn impulse_noise_avx2(
    img: &mut [f32],
    threshold: u32,
    draws: &mut PixelRng,
    pixel: impl FnMut(&mut f32, usize, u32),
) {
    // Draws are below 2^16 and the threshold at most 2^15: signed compares are exact.
    let limit = _mm256_set1_epi32(threshold as i32);
    let (one, onef) = (_mm256_set1_epi32(1), _mm256_set1_ps(1.0));
    let half = |px: &mut [f32], _: usize, d: __m256i| {
        let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(d));
        let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(d));
        for (at, b) in [(0, lo), (8, hi)] {
            let hit = _mm256_cmpgt_epi32(limit, _mm256_srli_epi32::<1>(b));
            let salt = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, one), one));
            // SAFETY: `px` holds 16 floats.
            unsafe {
                let p = px.as_mut_ptr().add(at);
                let value = _mm256_and_ps(salt, onef);
                let v = _mm256_blendv_ps(_mm256_loadu_ps(p), value, _mm256_castsi256_ps(hit));
                _mm256_storeu_ps(p, v);
            }
        }
    };
    // SAFETY: AVX2 is available (the caller's promise).
    unsafe { steps_avx2(img, draws, half, pixel) }
}

/// `impulse_noise_bytes` with AVX2 blends.
///
/// # Safety
/// AVX2 must be available; `src` and `dst` have one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn impulse_noise_bytes_avx2(
    src: &[u8],
    dst: &mut [u8],
    threshold: u32,
    draws: &mut PixelRng,
    pixel: impl FnMut(&mut u8, usize, u32),
) {
    debug_assert!(threshold <= i16::MAX as u32, "amounts stay below one");
    let limit = _mm256_set1_epi16(threshold.min(i16::MAX as u32) as i16);
    let one = _mm256_set1_epi16(1);
    let half = |out: &mut [u8], at: usize, d: __m256i| {
        // The draws' top 15 bits are below 2^15, so signed 16-bit compares are exact.
        let hit = _mm256_cmpgt_epi16(limit, _mm256_srli_epi16::<1>(d));
        let salt = _mm256_cmpeq_epi16(_mm256_and_si256(d, one), one);
        // Lanes of 0 / -1 to bytes (the signed pack keeps -1): hit 0-7, salt 0-7 | hit
        // 8-15, salt 8-15; then the hits' and the salts' halves together.
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi16(hit, salt));
        let (mask, value) = (
            _mm256_castsi256_si128(packed),
            _mm256_extracti128_si256::<1>(packed),
        );
        // SAFETY: 16 bytes of `src` from `at` (as `out`, a 16-byte part of `dst`).
        unsafe {
            let pixels = _mm_loadu_si128(src.as_ptr().add(at) as *const __m128i);
            _mm_storeu_si128(
                out.as_mut_ptr() as *mut __m128i,
                _mm_blendv_epi8(pixels, value, mask),
            );
        }
    };
    // SAFETY: AVX2 is available (the caller's promise).
    unsafe { steps_avx2(dst, draws, half, pixel) }
}

/// A [`PixelRng`] in four AVX-512 registers (one per state word).
#[cfg(target_arch = "x86_64")]
struct Lanes512([__m512i; 4]);

#[cfg(target_arch = "x86_64")]
impl Lanes512 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(rng: &PixelRng) -> Self {
        // SAFETY: each word is eight u64, 64 bytes.
        Self(
            rng.s
                .map(|w| unsafe { _mm512_loadu_si512(w.as_ptr() as *const _) }),
        )
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(&self, rng: &mut PixelRng) {
        for (w, v) in rng.s.iter_mut().zip(self.0) {
            // SAFETY: each word is eight u64, 64 bytes.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr() as *mut _, v) };
        }
    }

    /// [`PixelRng::next_words`], as one register: the step's 32 draws in 16-bit lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn next(&mut self) -> __m512i {
        let [s0, s1, s2, s3] = &mut self.0;
        let out = _mm512_add_epi64(_mm512_rol_epi64::<23>(_mm512_add_epi64(*s0, *s3)), *s0);
        let t = _mm512_slli_epi64::<17>(*s1);
        *s2 = _mm512_xor_si512(*s2, *s0);
        *s3 = _mm512_xor_si512(*s3, *s1);
        *s1 = _mm512_xor_si512(*s1, *s2);
        *s0 = _mm512_xor_si512(*s0, *s3);
        *s2 = _mm512_xor_si512(*s2, t);
        *s3 = _mm512_rol_epi64::<45>(*s3);
        out
    }
}

/// Which of the step's 32 pixels from `at` lie in an image of `n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn step_mask(n: usize, at: usize) -> __mmask32 {
    match n - at {
        left if left >= 32 => u32::MAX,
        left => (1u32 << left) - 1,
    }
}

/// `gaussian_noise_bytes` with AVX-512: a step per register, the last one masked.
///
/// # Safety
/// AVX-512 F, BW and VL must be available; `src` and `dst` have one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn gaussian_noise_bytes_avx512(
    src: &[u8],
    dst: &mut [u8],
    table: &[i8; 16],
    draws: &mut PixelRng,
) {
    // SAFETY: 16 bytes.
    let table =
        _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr() as *const __m128i) });
    let (nibble, ones, zero) = (
        _mm512_set1_epi8(0xF),
        _mm512_set1_epi8(1),
        _mm512_setzero_si512(),
    );
    let mut state = Lanes512::load(draws);
    for at in (0..src.len()).step_by(PIXELS_PER_STEP) {
        let d = state.next();
        let low = _mm512_shuffle_epi8(table, _mm512_and_si512(d, nibble));
        let high = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(d), nibble));
        let sums = _mm512_add_epi16(
            _mm512_maddubs_epi16(ones, low),
            _mm512_maddubs_epi16(ones, high),
        );
        let mask = step_mask(src.len(), at);
        // SAFETY: the mask keeps the load and the store inside both slices.
        unsafe {
            let bytes = _mm256_maskz_loadu_epi8(mask, src.as_ptr().add(at) as *const i8);
            let v = _mm512_max_epi16(_mm512_add_epi16(_mm512_cvtepu8_epi16(bytes), sums), zero);
            // Unsigned saturation to bytes: 0..=255 after the max with 0.
            let out = _mm512_cvtusepi16_epi8(v);
            _mm256_mask_storeu_epi8(dst.as_mut_ptr().add(at) as *mut i8, mask, out);
        }
    }
    state.store(draws);
}

/// `impulse_noise_bytes` with AVX-512: a step per register, the last one masked.
///
/// # Safety
/// AVX-512 F, BW and VL must be available; `src` and `dst` have one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn impulse_noise_bytes_avx512(
    src: &[u8],
    dst: &mut [u8],
    threshold: u32,
    draws: &mut PixelRng,
) {
    debug_assert!(threshold <= i16::MAX as u32, "amounts stay below one");
    let limit = _mm512_set1_epi16(threshold.min(i16::MAX as u32) as i16);
    let one = _mm512_set1_epi16(1);
    let mut state = Lanes512::load(draws);
    for at in (0..src.len()).step_by(PIXELS_PER_STEP) {
        let d = state.next();
        // The draws' top 15 bits are below 2^15, so signed 16-bit compares are exact.
        let hit = _mm512_cmplt_epi16_mask(_mm512_srli_epi16::<1>(d), limit);
        let salt = _mm512_test_epi16_mask(d, one);
        let mask = step_mask(src.len(), at);
        // SAFETY: the mask keeps the load and the store inside both slices.
        unsafe {
            let pixels = _mm256_maskz_loadu_epi8(mask, src.as_ptr().add(at) as *const i8);
            let out = _mm256_mask_blend_epi8(hit, pixels, _mm256_movm_epi8(salt));
            _mm256_mask_storeu_epi8(dst.as_mut_ptr().add(at) as *mut i8, mask, out);
        }
    }
    state.store(draws);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corruptions::info::GAUSSIAN_NOISE_STD;
    use crate::corruptions::rng::{inverse_normal_cdf, item_rng};
    use crate::corruptions::{Corruption, StreamKey, Workspace};

    /// The instruction sets this processor can run.
    fn isas() -> Vec<Isa> {
        let best = Isa::detected();
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }

    #[test]
    fn byte_paths_agree_on_every_length() {
        // Whole steps, half steps and masked tails: every instruction set, the same bytes.
        let mut rng = item_rng(1, 2, 3);
        for n in [1, 15, 16, 17, 31, 32, 33, 48, 63, 784, 841] {
            let src: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let table = noise_levels(0.26);
            let want = |f: &dyn Fn(&mut [u8], Isa)| {
                let mut out = vec![0u8; n];
                f(&mut out, Isa::Portable);
                out
            };
            let gauss = |out: &mut [u8], isa| {
                gaussian_noise_bytes(&src, out, &table, &mut item_rng(4, 5, n as u64), isa)
            };
            let impulse = |out: &mut [u8], isa| {
                impulse_noise_bytes(&src, out, 0.27, &mut item_rng(4, 5, n as u64), isa)
            };
            for (name, f) in [
                ("gaussian", &gauss as &dyn Fn(&mut [u8], Isa)),
                ("impulse", &impulse),
            ] {
                let expected = want(f);
                assert!(n < 32 || expected != src, "{name} {n}");
                for isa in isas() {
                    let mut out = vec![0u8; n];
                    f(&mut out, isa);
                    assert_eq!(out, expected, "{name} {n} {isa:?}");
                }
            }
        }
    }

    #[test]
    fn float_paths_agree_on_every_length() {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            for n in [1, 15, 16, 17, 31, 32, 33, 784, 841] {
                let img: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
                let table = noise_levels(0.18);
                let (mut a, mut b) = (img.clone(), img.clone());
                gaussian_noise::<false>(&mut a, &table, &mut item_rng(7, 8, 9));
                // SAFETY: AVX2 is available (checked above).
                unsafe { avx2(|| gaussian_noise::<true>(&mut b, &table, &mut item_rng(7, 8, 9))) };
                assert_eq!(a, b, "gaussian {n}");
                let (mut a, mut b) = (img.clone(), img.clone());
                impulse_noise::<false>(&mut a, 0.17, &mut item_rng(7, 8, 9));
                // SAFETY: AVX2 is available (checked above).
                unsafe { avx2(|| impulse_noise::<true>(&mut b, 0.17, &mut item_rng(7, 8, 9))) };
                assert_eq!(a, b, "impulse {n}");
                assert!(n < 32 || a != img, "impulse {n}");
            }
        }
    }

    /// Runs `f` compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(f: impl FnOnce()) {
        f()
    }

    #[test]
    fn noise_draws_are_standard_normal() {
        // Every one of the 65,536 draws, exactly: moments and quantiles of N(0, 1).
        let sd = noise_sum_sd() as f64;
        let mut z: Vec<f64> = (0..1u32 << 16)
            .map(|d| noise_sum(&NOISE_NIBBLE, d) as f64 / sd)
            .collect();
        let n = z.len() as f64;
        let moment = |k: i32| z.iter().map(|v| v.powi(k)).sum::<f64>() / n;
        assert!(moment(1).abs() < 1e-12 && (moment(2) - 1.0).abs() < 1e-6);
        assert!((moment(4) - 3.0).abs() < 0.03, "kurtosis {}", moment(4));
        z.sort_by(f64::total_cmp);
        for p in [
            0.0015, 0.01, 0.05, 0.16, 0.3, 0.5, 0.7, 0.84, 0.95, 0.99, 0.9985,
        ] {
            let q = z[(p * n) as usize];
            assert!((q - inverse_normal_cdf(p)).abs() < 0.05, "{p}: {q}");
        }
        assert!(z[z.len() - 1] < 4.2 && (z[0] + z[z.len() - 1]).abs() < 1e-12);
    }

    #[test]
    fn noise_levels_keep_the_std_and_the_shape() {
        // Every one of the 65,536 draws of each severity's table, exactly.
        for std in GAUSSIAN_NOISE_STD {
            let table = noise_levels(std);
            let target = 255.0 * std as f64;
            let mut d: Vec<f64> = (0..1u32 << 16)
                .map(|draw| noise_sum(&table, draw) as f64)
                .collect();
            let n = d.len() as f64;
            let mean = d.iter().sum::<f64>() / n;
            let sd = (d.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
            assert!(
                mean.abs() < 1e-12 && (sd / target - 1.0).abs() < 0.005,
                "{std}: {sd}"
            );
            d.sort_by(f64::total_cmp);
            for p in [0.0015, 0.01, 0.05, 0.16, 0.3, 0.7, 0.84, 0.95, 0.99, 0.9985] {
                // (severity 1's levels are 1/20 of its std apart)
                let q = d[(p * n) as usize] / target;
                assert!((q - inverse_normal_cdf(p)).abs() < 0.1, "{std} {p}: {q}");
            }
        }
    }

    #[test]
    fn noise_has_the_stated_std() {
        let c = Corruption::new("gaussian_noise", 2, "dark", [1, 64, 64]).unwrap();
        let mut x = vec![0.5f32; 64 * 64];
        c.apply(&mut x, &StreamKey::new(0, 0), 0, &mut Workspace::default())
            .unwrap();
        let var = x.iter().map(|v| ((v - 0.5) as f64).powi(2)).sum::<f64>() / x.len() as f64;
        assert!((var.sqrt() - 0.12).abs() < 0.005, "{}", var.sqrt());
    }
}
