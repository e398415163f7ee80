//! Image corruptions at five severities, after Hendrycks & Dietterich's ImageNet-C / CIFAR-10-C
//! and Mu & Gilmer's MNIST-C, with parameters scaled to 28x28 glyphs.
//!
//! | name             | severity 1 .. 5                         | what it does                                   |
//! |------------------|-----------------------------------------|------------------------------------------------|
//! | `gaussian_noise` | std 0.08, 0.12, 0.18, 0.26, 0.38        | `x + N(0, std^2)` per pixel (ImageNet-C; a sum of four table draws, in whole grey levels of 1/255) |
//! | `impulse_noise`  | amount 0.03, 0.06, 0.09, 0.17, 0.27     | that fraction of pixels set to 0 or 1, half each (ImageNet-C) |
//! | `gaussian_blur`  | sigma 0.5, 0.75, 1.0, 1.25, 1.5 px      | Gaussian filter, edges replicated (CIFAR-10-C's 0.4-1 px, widened for 2 px strokes) |
//! | `thicken`        | radius 0.4, 0.7, 1.0, 1.4, 1.8 px       | dilation of the ink by a soft disk             |
//! | `thin`           | radius 0.15, 0.3, 0.45, 0.6, 0.8 px     | erosion of the ink by a soft disk              |
//! | `elastic`        | displacement std 0.6, 0.9, 1.2, 1.6, 2.0 px | smooth random displacement field, bilinear |
//! | `occlusion`      | 1, 2, 3, 4, 5 patches of 6x6 px         | ink-coloured squares at random places (as MNIST-C's ink occluders) |
//! | `contrast`       | factor 0.75, 0.5, 0.4, 0.3, 0.15        | `(x - mean) * factor + mean` per channel (CIFAR-10-C) |
//! | `rotate`         | angle ±0.2, 0.4, 0.6, 0.8, 1.0 rad      | rotation about the centre, random sign (MNIST-C); Paeth's three shears |
//! | `shear`          | factor ±0.2, 0.4, 0.6, 0.8, 1.0         | `x' = x + k (y - centre)`, random sign (MNIST-C) |
//!
//! Lengths (sigma, radii, displacement, patch side) are for 28x28 and scale with
//! `min(H, W) / 28`. Images are `(C, H, W)` in `[0, 1]` and stay there (results are clamped).
//! `ink` is the polarity: `Dark` (Omniglot: ink towards 0 on a white background) or `Light`.
//! Thicken/thin act on the ink amount (`1 - x` for dark ink); occluders are ink-coloured;
//! geometric warps fill what comes from outside the image with the background.
//!
//! Soft disk of radius `r`: the neighbour at distance `d > 0` has weight
//! `clamp(r + 1 - d, 0, 1)`, so the result grows continuously with `r`.
//! Dilation: `a'(p) = max_o w(o) a(p + o)`; erosion: `a'(p) = min_o 1 - w(o) (1 - a(p + o))`.
//!
//! Randomness: item `item` under `(seed, stream)` draws from xoshiro256++ seeded by `item`
//! mixed into 32 bytes of ChaCha8 keyed by `(seed, "corrupt")` on stream `stream` (the
//! sampler's episode index) ([`StreamKey`]); the noises' per-pixel draws come from eight
//! xoshiro256++ generators in lock step seeded from it (see `noise`). So a corruption is a
//! pure function of `(seed, stream, item, name, severity, ink)`. Severities share the random
//! draws: noise is the same pattern scaled, patches are added one by one, so the difference
//! from the clean image grows with the severity.

use std::sync::OnceLock;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{checked_product, value_err, Result};
use crate::pool;

mod noise;
#[cfg(test)]
use noise::noise_sum;
use noise::{
    gaussian_noise, gaussian_noise_bytes, impulse_noise, impulse_noise_bytes, levels_to_unit,
    noise_levels, Isa,
};

/// The corruption names, in a fixed order.
pub const NAMES: [&str; 10] = [
    "gaussian_noise",
    "impulse_noise",
    "gaussian_blur",
    "thicken",
    "thin",
    "elastic",
    "occlusion",
    "contrast",
    "rotate",
    "shear",
];

/// Severities run `1..=MAX_SEVERITY`.
pub const MAX_SEVERITY: u8 = 5;

const GAUSSIAN_NOISE_STD: [f32; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];
const IMPULSE_AMOUNT: [f32; 5] = [0.03, 0.06, 0.09, 0.17, 0.27];
const BLUR_SIGMA: [f32; 5] = [0.5, 0.75, 1.0, 1.25, 1.5];
const THICKEN_RADIUS: [f32; 5] = [0.4, 0.7, 1.0, 1.4, 1.8];
const THIN_RADIUS: [f32; 5] = [0.15, 0.3, 0.45, 0.6, 0.8];
const ELASTIC_STD: [f32; 5] = [0.6, 0.9, 1.2, 1.6, 2.0];
const OCCLUSION_PATCHES: [usize; 5] = [1, 2, 3, 4, 5];
const OCCLUSION_SIDE: f32 = 6.0;
const CONTRAST_FACTOR: [f32; 5] = [0.75, 0.5, 0.4, 0.3, 0.15];
const ROTATE_RADIANS: [f32; 5] = [0.2, 0.4, 0.6, 0.8, 1.0];
const SHEAR_FACTOR: [f32; 5] = [0.2, 0.4, 0.6, 0.8, 1.0];
/// Image side the lengths above are given for.
const REFERENCE_SIDE: f32 = 28.0;
/// Basis functions per axis of the elastic displacement field (correlation ~ side / 4).
const ELASTIC_BASIS: usize = 4;
/// f32 lanes of an AVX2 vector.
const LANES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    GaussianNoise,
    ImpulseNoise,
    GaussianBlur,
    Thicken,
    Thin,
    Elastic,
    Occlusion,
    Contrast,
    Rotate,
    Shear,
}

const KINDS: [Kind; 10] = [
    Kind::GaussianNoise,
    Kind::ImpulseNoise,
    Kind::GaussianBlur,
    Kind::Thicken,
    Kind::Thin,
    Kind::Elastic,
    Kind::Occlusion,
    Kind::Contrast,
    Kind::Rotate,
    Kind::Shear,
];

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Kind {
    /// `name` as a kind; the error names the argument `arg`.
    pub fn parse(name: &str, arg: &str) -> Result<Kind> {
        match NAMES.iter().position(|&n| n == name) {
            Some(i) => Ok(KINDS[i]),
            None => value_err(format!(
                "{arg}: unknown corruption {name:?}; expected one of {}",
                quoted(&NAMES)
            )),
        }
    }

    pub fn name(self) -> &'static str {
        NAMES[KINDS
            .iter()
            .position(|&k| k == self)
            .expect("every kind is listed")]
    }
}

/// `severity` if it is in `1..=MAX_SEVERITY`.
pub fn check_severity(severity: i64) -> Result<u8> {
    if (1..=MAX_SEVERITY as i64).contains(&severity) {
        Ok(severity as u8)
    } else {
        value_err(format!(
            "severity: must be an int in 1..={MAX_SEVERITY}, got {severity}"
        ))
    }
}

/// Ink polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ink {
    Dark,
    Light,
}

impl Ink {
    pub fn parse(name: &str) -> Result<Ink> {
        match name {
            "dark" => Ok(Ink::Dark),
            "light" => Ok(Ink::Light),
            _ => value_err(format!("ink: expected 'dark' or 'light', got {name:?}")),
        }
    }

    fn value(self) -> f32 {
        match self {
            Ink::Dark => 0.0,
            Ink::Light => 1.0,
        }
    }

    fn background(self) -> f32 {
        1.0 - self.value()
    }
}

/// Which items of an episode the sampler corrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Query,
    Support,
    Both,
}

impl Target {
    pub fn parse(name: &str) -> Result<Target> {
        match name {
            "query" => Ok(Target::Query),
            "support" => Ok(Target::Support),
            "both" => Ok(Target::Both),
            _ => value_err(format!(
                "corrupt: expected 'query', 'support' or 'both', got {name:?}"
            )),
        }
    }

    pub fn support(self) -> bool {
        matches!(self, Target::Support | Target::Both)
    }

    pub fn query(self) -> bool {
        matches!(self, Target::Query | Target::Both)
    }
}

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
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A standard normal, quantised to 4096 levels.
    fn normal(&mut self) -> f32 {
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
fn inverse_normal_cdf(p: f64) -> f64 {
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

/// Precomputed, shape-dependent parts of a corruption.
#[derive(Debug, Clone)]
enum Plan {
    None,
    /// Normalised Gaussian taps, `2R + 1` of them.
    Blur(Vec<f32>),
    /// Soft-disk neighbours `(dy, dx, weight)` within `pad` pixels.
    Morph {
        pad: usize,
        taps: Vec<(isize, isize, f32)>,
    },
    /// Basis functions, `phi_x[k * P + x]` (zero from `W` to the pitch `P`, `W` rounded up
    /// to whole vectors) and `phi_y[k * H + y]`, each column of unit norm; `ramp[x] = x`
    /// for `x < P`.
    Elastic {
        phi_x: Vec<f32>,
        phi_y: Vec<f32>,
        ramp: Vec<f32>,
    },
    Occlusion {
        side: usize,
    },
    /// Gaussian noise's table in grey levels ([`noise_levels`]).
    Noise([i8; 16]),
}

/// One corruption at one severity, for images of one shape.
#[derive(Debug, Clone)]
pub struct Corruption {
    kind: Kind,
    severity: u8,
    ink: Ink,
    shape: [usize; 3],
    plan: Plan,
}

/// Where a corruption's randomness comes from: an item of a stream, or a chosen variant.
#[derive(Clone, Copy)]
enum Draw<'a> {
    Item(&'a StreamKey, u64),
    Variant(usize),
}

/// Per-thread scratch buffers, grown on first use.
#[derive(Debug, Default)]
pub struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    idx: Vec<u32>,
}

fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl Corruption {
    /// `name` at `severity` (1..=5) for `(C, H, W)` images with ink polarity `ink`
    /// ("dark" | "light").
    pub fn new(name: &str, severity: i64, ink: &str, shape: [usize; 3]) -> Result<Self> {
        let kind = Kind::parse(name, "corruption")?;
        let severity = check_severity(severity)?;
        let ink = Ink::parse(ink)?;
        if shape.contains(&0) {
            return value_err(format!(
                "images: each image must hold at least one pixel, got shape {shape:?}"
            ));
        }
        checked_product(&shape, "images: image size")?;
        let s = severity as usize - 1;
        let [_, h, w] = shape;
        let scale = h.min(w) as f32 / REFERENCE_SIDE;
        let plan = match kind {
            Kind::GaussianBlur => Plan::Blur(gaussian_taps(BLUR_SIGMA[s] * scale)),
            Kind::Thicken => morph_plan(THICKEN_RADIUS[s] * scale),
            Kind::Thin => morph_plan(THIN_RADIUS[s] * scale),
            Kind::Elastic => Plan::Elastic {
                phi_x: elastic_basis(w)
                    .chunks(w)
                    .flat_map(|row| {
                        row.iter()
                            .copied()
                            .chain(vec![0.0; w.next_multiple_of(LANES) - w])
                    })
                    .collect(),
                phi_y: elastic_basis(h),
                ramp: (0..w.next_multiple_of(LANES)).map(|x| x as f32).collect(),
            },
            Kind::GaussianNoise => Plan::Noise(noise_levels(GAUSSIAN_NOISE_STD[s])),
            Kind::Occlusion => Plan::Occlusion {
                side: ((OCCLUSION_SIDE * scale).round() as usize).clamp(1, h.min(w)),
            },
            _ => Plan::None,
        };
        Ok(Self {
            kind,
            severity,
            ink,
            shape,
            plan,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn severity(&self) -> u8 {
        self.severity
    }
    pub fn ink(&self) -> Ink {
        self.ink
    }
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    /// Values per image, `C * H * W`.
    pub fn item_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Corrupts one image `img` (`C * H * W` values in `[0, 1]`) in place, with the
    /// randomness of item `item` of the stream `key`.
    pub fn apply(
        &self,
        img: &mut [f32],
        key: &StreamKey,
        item: u64,
        ws: &mut Workspace,
    ) -> Result<()> {
        if img.len() != self.item_size() {
            return value_err(format!(
                "image: expected {} values ({:?}), got {}",
                self.item_size(),
                self.shape,
                img.len()
            ));
        }
        self.apply_unchecked(img, key, item, ws);
        Ok(())
    }

    /// `apply` once the length is known to be right.
    pub(crate) fn apply_unchecked(
        &self,
        img: &mut [f32],
        key: &StreamKey,
        item: u64,
        ws: &mut Workspace,
    ) {
        self.apply_fused(
            img,
            |_| {},
            |unit| {
                for v in unit.iter_mut() {
                    *v = clamp(*v, 0.0, 1.0);
                }
            },
            key,
            item,
            ws,
        )
    }

    /// One image through `load` (fills `unit` with its `[0, 1]` values), the corruption, and
    /// `store`, which gets the result *unclamped* and must clamp it to `[0, 1]` (interpolation
    /// and blur round just past the ends). The three run as one function compiled for AVX2
    /// where the processor has it, so the conversions vectorise too.
    #[inline(always)]
    pub(crate) fn apply_fused<L, S>(
        &self,
        unit: &mut [f32],
        load: L,
        store: S,
        key: &StreamKey,
        item: u64,
        ws: &mut Workspace,
    ) where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        self.fused(unit, load, store, Draw::Item(key, item), ws)
    }

    /// How many different results the corruption has for one image, if it draws from a
    /// finite set: 1 for those without randomness (blur, thickening, thinning, contrast),
    /// 2 for rotation and shear (the direction is random); `None` for the others.
    pub fn variants(&self) -> Option<usize> {
        match self.kind {
            Kind::GaussianBlur | Kind::Thicken | Kind::Thin | Kind::Contrast => Some(1),
            Kind::Rotate | Kind::Shear => Some(2),
            _ => None,
        }
    }

    /// Which of the [`variants`](Self::variants) item `item` of stream `key` gets (0 for
    /// the corruptions without a finite set).
    #[inline]
    pub fn variant_of(&self, key: &StreamKey, item: u64) -> usize {
        match self.kind {
            Kind::Rotate | Kind::Shear => (key.item(item).next_u64() >> 63) as usize,
            _ => 0,
        }
    }

    /// `apply_fused` giving variant `variant` (below [`variants`](Self::variants)), the
    /// same bits as `apply_fused` for an item whose [`variant_of`](Self::variant_of) it is.
    #[inline(always)]
    pub(crate) fn apply_variant_fused<L, S>(
        &self,
        unit: &mut [f32],
        load: L,
        store: S,
        variant: usize,
        ws: &mut Workspace,
    ) where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        debug_assert!(variant < self.variants().unwrap_or(0), "no such variant");
        self.fused(unit, load, store, Draw::Variant(variant), ws)
    }

    #[inline(always)]
    fn fused<L, S>(&self, unit: &mut [f32], load: L, store: S, draw: Draw, ws: &mut Workspace)
    where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            return unsafe { self.fused_avx2(unit, load, store, draw, ws) };
        }
        load(unit);
        self.apply_impl::<false>(unit, draw, ws);
        store(unit);
    }

    /// `fused` compiled for AVX2 (the portable build targets SSE2). The results are the
    /// same bits: no floating-point operation is reordered or fused.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fused_avx2<L, S>(
        &self,
        unit: &mut [f32],
        load: L,
        store: S,
        draw: Draw,
        ws: &mut Workspace,
    ) where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        load(unit);
        self.apply_impl::<true>(unit, draw, ws);
        store(unit);
    }

    /// The corruption, unclamped. `AVX2`: running inside `fused_avx2`, so AVX2 intrinsics
    /// may be used.
    #[inline(always)]
    fn apply_impl<const AVX2: bool>(&self, img: &mut [f32], draw: Draw, ws: &mut Workspace) {
        let s = self.severity as usize - 1;
        let [_, h, w] = self.shape;
        let plane = h * w;
        let scale = h.min(w) as f32 / REFERENCE_SIDE;
        let background = self.ink.background();
        let rng = || match draw {
            Draw::Item(key, item) => key.item(item),
            Draw::Variant(_) => unreachable!("only finite-variant corruptions take a variant"),
        };
        // Rotation and shear: variant 0 turns one way, 1 the other.
        let sign = || {
            let variant = match draw {
                Draw::Item(key, item) => self.variant_of(key, item),
                Draw::Variant(v) => v,
            };
            if variant == 0 {
                1.0
            } else {
                -1.0
            }
        };
        match (&self.plan, self.kind) {
            (Plan::Noise(table), _) => gaussian_noise::<AVX2>(img, table, &mut rng()),
            (_, Kind::ImpulseNoise) => impulse_noise::<AVX2>(img, IMPULSE_AMOUNT[s], &mut rng()),
            (_, Kind::Contrast) => {
                for p in img.chunks_mut(plane) {
                    contrast(p, CONTRAST_FACTOR[s]);
                }
            }
            (Plan::Blur(taps), _) => {
                for p in img.chunks_mut(plane) {
                    blur(p, h, w, taps, ws);
                }
            }
            (Plan::Morph { pad, taps }, kind) => {
                for p in img.chunks_mut(plane) {
                    morph(p, h, w, *pad, taps, kind == Kind::Thicken, self.ink, ws);
                }
            }
            (Plan::Occlusion { side }, _) => occlude(
                img,
                [h, w],
                *side,
                OCCLUSION_PATCHES[s],
                self.ink.value(),
                rng(),
            ),
            (Plan::Elastic { phi_x, phi_y, ramp }, _) => {
                let std = ELASTIC_STD[s] * scale;
                let pitch = ramp.len();
                let rows = grown(&mut ws.b, 2 * ELASTIC_BASIS * pitch);
                elastic_rows(rows, &mut rng(), std, phi_x, pitch);
                let field = ElasticField {
                    rows,
                    phi_y,
                    ramp,
                    h,
                    w,
                };
                if padded_len(h, w) > i32::MAX as usize {
                    let (sx, sy) = (grown(&mut ws.c, plane), grown(&mut ws.d, plane));
                    field.coordinates(sx, sy);
                    warp_huge(img, h, w, background, ws);
                } else {
                    let Workspace { c, d, idx, .. } = ws;
                    let (tx, ty) = (grown(c, plane + pitch), grown(d, plane + pitch));
                    if idx.len() < plane + pitch {
                        idx.resize(plane + pitch, 0);
                    }
                    #[cfg(target_arch = "x86_64")]
                    if AVX2 {
                        // SAFETY: AVX2 is available (AVX2 is only set inside `fused_avx2`),
                        // the buffers hold plane + pitch values, the padded image fits i32.
                        unsafe { field.sample_points_avx2(tx, ty, idx) };
                    } else {
                        field.sample_points(tx, ty, idx);
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    field.sample_points(tx, ty, idx);
                    warp_planes::<AVX2>(img, h, w, background, ws);
                }
            }
            (_, Kind::Rotate) => {
                let theta = sign() * ROTATE_RADIANS[s];
                for p in img.chunks_mut(plane) {
                    rotate::<AVX2>(p, h, w, theta, background, ws);
                }
            }
            (_, Kind::Shear) => {
                let k = -sign() * SHEAR_FACTOR[s];
                let cy = (h as f32 - 1.0) / 2.0;
                let Workspace { b, c, .. } = ws;
                for p in img.chunks_mut(plane) {
                    let copy = grown(c, plane);
                    copy.copy_from_slice(p);
                    // Source x = x + k (y - centre).
                    shift_rows::<AVX2>(copy, w, p, w, |y| k * (y as f32 - cy), background, b);
                }
            }
            _ => unreachable!("every kind has a plan"),
        }
    }

    /// Corrupts every image of `images` (`n * item_size` values) into `out`, image `j` with
    /// the randomness of item `j` of stream `index` under `seed`. In parallel for large
    /// batches; the result does not depend on the thread count.
    pub fn corrupt_batch<T: Unit>(
        &self,
        images: &[T],
        out: &mut [T],
        seed: u64,
        index: u64,
    ) -> Result<()> {
        let d = self.item_size();
        if !images.len().is_multiple_of(d) {
            return value_err(format!(
                "images: {} values are not a whole number of images of {:?}",
                images.len(),
                self.shape
            ));
        }
        if out.len() != images.len() {
            return value_err(format!(
                "out: holds {} values, needs {}",
                out.len(),
                images.len()
            ));
        }
        T::check(images)?;
        let key = StreamKey::new(seed, index);
        let one = |j: usize, src: &[T], dst: &mut [T], (unit, ws): &mut (Vec<f32>, Workspace)| {
            if T::corrupt_direct(self, src, dst, &key, j as u64) {
                return;
            }
            let unit = grown(unit, d);
            let (load, store) = (
                |u: &mut [f32]| T::load(src, u),
                |u: &mut [f32]| T::store(u, dst),
            );
            self.apply_fused(unit, load, store, &key, j as u64, ws);
        };
        let n = images.len() / d;
        let init = || (Vec::new(), Workspace::default());
        pool::install_if(n > 1 && n * d >= PARALLEL_MIN_PIXELS, |par| {
            if par {
                images
                    .par_chunks(d)
                    .zip(out.par_chunks_mut(d))
                    .enumerate()
                    .for_each_init(init, |st, (j, (src, dst))| one(j, src, dst, st));
            } else {
                let mut st = init();
                for (j, (src, dst)) in images.chunks(d).zip(out.chunks_mut(d)).enumerate() {
                    one(j, src, dst, &mut st);
                }
            }
        });
        Ok(())
    }
}

impl Corruption {
    /// Corrupts the bytes `src` (one image) into `dst` without floats where the corruption
    /// allows it: occlusion and impulse noise only set pixels to 0 or 255, and the other
    /// bytes survive the float round trip exactly; Gaussian noise adds whole grey levels. So
    /// this gives the bytes of the float path rounded (tested). Returns false, writing
    /// nothing, for the other corruptions.
    pub fn apply_bytes(&self, src: &[u8], dst: &mut [u8], key: &StreamKey, item: u64) -> bool {
        let s = self.severity as usize - 1;
        let [_, h, w] = self.shape;
        let ink = if self.ink.value() == 0.0 { 0 } else { 255 };
        match (&self.plan, self.kind) {
            (Plan::Occlusion { side }, _) => {
                dst.copy_from_slice(src);
                occlude(
                    dst,
                    [h, w],
                    *side,
                    OCCLUSION_PATCHES[s],
                    ink,
                    key.item(item),
                );
            }
            (_, Kind::ImpulseNoise) => {
                let (amount, isa) = (IMPULSE_AMOUNT[s], Isa::detected());
                impulse_noise_bytes(src, dst, amount, &mut key.item(item), isa);
            }
            (Plan::Noise(table), _) => {
                gaussian_noise_bytes(src, dst, table, &mut key.item(item), Isa::detected());
            }
            _ => return false,
        }
        true
    }
}

/// `patches` squares of side `side` set to `ink` at random places, the same in every plane.
fn occlude<T: Copy>(
    img: &mut [T],
    [h, w]: [usize; 2],
    side: usize,
    patches: usize,
    ink: T,
    mut rng: ItemRng,
) {
    for _ in 0..patches {
        let y0 = rng.below(h - side + 1);
        let x0 = rng.below(w - side + 1);
        for p in img.chunks_mut(h * w) {
            for row in p.chunks_mut(w).skip(y0).take(side) {
                row[x0..x0 + side].fill(ink);
            }
        }
    }
}

/// Batches of at least this many pixels are corrupted by the whole pool (about 0.1 ms).
const PARALLEL_MIN_PIXELS: usize = 1 << 15;

/// Element types of images: bytes `0..=255` or floats in `[0, 1]`.
pub trait Unit: Copy + Send + Sync + 'static {
    /// Rejects values outside the type's range.
    fn check(images: &[Self]) -> Result<()>;
    fn load(src: &[Self], dst: &mut [f32]);
    /// Writes `src` clamped to `[0, 1]`.
    fn store(src: &[f32], dst: &mut [Self]);
    /// Corrupts `src` into `dst` without the float round trip where that gives the same
    /// values ([`Corruption::apply_bytes`]); false, writing nothing, where it does not.
    fn corrupt_direct(
        _: &Corruption,
        _src: &[Self],
        _dst: &mut [Self],
        _: &StreamKey,
        _item: u64,
    ) -> bool {
        false
    }
}

impl Unit for u8 {
    fn check(_: &[u8]) -> Result<()> {
        Ok(())
    }
    fn corrupt_direct(
        c: &Corruption,
        src: &[u8],
        dst: &mut [u8],
        key: &StreamKey,
        item: u64,
    ) -> bool {
        c.apply_bytes(src, dst, key, item)
    }
    #[inline(always)]
    fn load(src: &[u8], dst: &mut [f32]) {
        // The sampler's float conversion, bit for bit.
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            *d = byte_to_unit(*s);
        }
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [u8]) {
        unit_to_u8(src, dst);
    }
}

impl Unit for f32 {
    fn check(images: &[f32]) -> Result<()> {
        match images.iter().position(|v| !(0.0..=1.0).contains(v)) {
            None => Ok(()),
            Some(i) => value_err(format!(
                "images: float32 values must lie in [0, 1]; got {} at flat index {i}",
                images[i]
            )),
        }
    }
    #[inline(always)]
    fn load(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            *d = clamp(*s, 0.0, 1.0);
        }
    }
}

/// `v / 255` in f32, correctly rounded: the same bits as `v as f32 / 255.0` (tested for every
/// byte) without the division, which costs ~3.5 cycles per eight pixels. `q = v * (1/255)`
/// is off by an ulp for half the bytes; one Newton correction with the residual
/// `v - 255 q = (v - 256 q) + q`, whose two steps are exact (Sterbenz), rounds it right.
#[inline(always)]
pub fn byte_to_unit(v: u8) -> f32 {
    levels_to_unit(v as f32)
}

/// `[0, 1]` floats to bytes: `floor(255 x + 0.5)`, `x` clamped first (NaN gives 0).
#[inline(always)]
pub fn unit_to_u8(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.iter_mut()) {
        let v = clamp(*s, 0.0, 1.0) * 255.0 + 0.5;
        // SAFETY: v is in [0.5, 255.5]. (`round` is a libm call on the baseline target and
        // `as` adds saturation code; either keeps the loop from vectorising.)
        *d = unsafe { v.to_int_unchecked::<i32>() } as u8;
    }
}

#[inline(always)]
fn contrast(plane: &mut [f32], factor: f32) {
    // Eight running sums in a fixed order: vectorises, and stays deterministic.
    let mut sums = [0f32; 8];
    let mut chunks = plane.chunks_exact(8);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    let total = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let mean = total / plane.len() as f32;
    for v in plane.iter_mut() {
        *v = (*v - mean) * factor + mean;
    }
}

// Loop kernels over slice arguments: as parameters the slices are known not to overlap, so
// the loops vectorise even once inlined into one big function. Selects are written as
// `max`/`min` or bit masks: LLVM turns `*a = if c { v } else { *a }` into masked stores,
// which are microcoded and very slow on AMD processors.

/// `dst += t * src`
#[inline(always)]
fn axpy(dst: &mut [f32], src: &[f32], t: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += t * s;
    }
}

/// `acc = max(acc, wgt * src)`
#[inline(always)]
fn max_scaled(acc: &mut [f32], src: &[f32], wgt: f32) {
    for (a, s) in acc.iter_mut().zip(src) {
        *a = a.max(wgt * s);
    }
}

/// `acc = min(acc, keep + wgt * src)`
#[inline(always)]
fn min_affine(acc: &mut [f32], src: &[f32], keep: f32, wgt: f32) {
    for (a, s) in acc.iter_mut().zip(src) {
        *a = a.min(keep + wgt * s);
    }
}

/// `dst = a + f * (b - a)`. The rows here are short (28 pixels), too short for LLVM's
/// vectorised loop (four vectors per iteration), hence the explicit AVX2 version.
#[inline(always)]
fn lerp<const AVX2: bool>(dst: &mut [f32], a: &[f32], b: &[f32], f: f32) {
    let n = dst.len().min(a.len()).min(b.len());
    let (dst, a, b) = (&mut dst[..n], &a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is available (AVX2 is only set inside `fused_avx2`), and the
        // three slices have the same length.
        return unsafe { lerp_avx2(dst, a, b, f) };
    }
    lerp_scalar(dst, a, b, f);
}

#[inline(always)]
fn lerp_scalar(dst: &mut [f32], a: &[f32], b: &[f32], f: f32) {
    for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
        *d = a + f * (b - a);
    }
}

/// `lerp` eight values at a time (the same operations, unfused: the same bits).
///
/// # Safety
/// AVX2 must be available; `a` and `b` hold at least `dst.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lerp_avx2(dst: &mut [f32], a: &[f32], b: &[f32], f: f32) {
    use std::arch::x86_64::*;
    let n = dst.len();
    let fv = _mm256_set1_ps(f);
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: k + 8 <= n bounds the loads and the store.
        unsafe {
            let av = _mm256_loadu_ps(a.as_ptr().add(k));
            let bv = _mm256_loadu_ps(b.as_ptr().add(k));
            let v = _mm256_add_ps(av, _mm256_mul_ps(fv, _mm256_sub_ps(bv, av)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(k), v);
        }
        k += 8;
    }
    lerp_scalar(&mut dst[k..], &a[k..], &b[k..], f);
}

/// `x` clamped to `[lo, hi]` (one maxps and one minps; NaN becomes `lo`).
#[inline(always)]
pub(crate) fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    x.max(lo).min(hi)
}

fn gaussian_taps(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as isize;
    let taps: Vec<f32> = (-r..=r)
        .map(|k| (-(k * k) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = taps.iter().sum();
    let mut taps: Vec<f32> = taps.into_iter().map(|t| t / sum).collect();
    // The last tap makes the running sum (the blur's own order) exactly 1, so a flat region
    // stays exactly flat (white stays 1.0): `1 - partial` is exact for partial in [0.5, 1].
    if let Some((last, rest)) = taps.split_last_mut() {
        *last = 1.0 - rest.iter().fold(0.0f32, |acc, &t| acc + t);
    }
    taps
}

/// Copies the `h x w` plane into `dst` with `pad` pixels on every side, edges replicated;
/// returns the padded row length.
#[inline(always)]
fn pad_replicate(src: &[f32], h: usize, w: usize, pad: usize, dst: &mut Vec<f32>) -> usize {
    let pw = w + 2 * pad;
    let out = grown(dst, (h + 2 * pad) * pw);
    for (py, row) in out.chunks_mut(pw).enumerate() {
        let y = py.saturating_sub(pad).min(h - 1);
        let s = &src[y * w..(y + 1) * w];
        row[..pad].fill(s[0]);
        row[pad..pad + w].copy_from_slice(s);
        row[pad + w..].fill(s[w - 1]);
    }
    pw
}

/// Copies rows of `w` values at pitch `pitch` in `src` into the `h x w` plane `dst`.
#[inline(always)]
fn unpitch(src: &[f32], pitch: usize, w: usize, dst: &mut [f32]) {
    for (d, s) in dst.chunks_mut(w).zip(src.chunks(pitch)) {
        d.copy_from_slice(&s[..w]);
    }
}

/// Separable Gaussian filter, edges replicated. Both passes work on the padded layout so
/// that each tap is one long vectorised loop (the columns past `w` are computed, not used).
#[inline(always)]
fn blur(plane: &mut [f32], h: usize, w: usize, taps: &[f32], ws: &mut Workspace) {
    let r = taps.len() / 2;
    let pw = pad_replicate(plane, h, w, r, &mut ws.a);
    let padded = &ws.a[..(h + 2 * r) * pw];
    let n1 = (h + 2 * r) * pw - 2 * r;
    let across = grown(&mut ws.b, n1);
    across.fill(0.0);
    for (k, &t) in taps.iter().enumerate() {
        axpy(across, &padded[k..k + n1], t);
    }
    let n2 = (h - 1) * pw + w;
    let down = grown(&mut ws.c, n2);
    down.fill(0.0);
    for (k, &t) in taps.iter().enumerate() {
        axpy(down, &across[k * pw..k * pw + n2], t);
    }
    unpitch(down, pw, w, plane);
}

fn morph_plan(radius: f32) -> Plan {
    let reach = (radius + 1.0).ceil() as isize;
    let mut taps = Vec::new();
    for dy in -reach..=reach {
        for dx in -reach..=reach {
            let d = ((dx * dx + dy * dy) as f32).sqrt();
            let wgt = (radius + 1.0 - d).clamp(0.0, 1.0);
            if (dx, dy) != (0, 0) && wgt > 0.0 {
                taps.push((dy, dx, wgt));
            }
        }
    }
    let pad = taps
        .iter()
        .map(|&(dy, dx, _)| dy.unsigned_abs().max(dx.unsigned_abs()))
        .max()
        .unwrap_or(0);
    Plan::Morph { pad, taps }
}

/// Soft-disk dilation (`grow`) or erosion of the ink of one plane. In pixel values, growing
/// dark ink is `x' = min_o 1 - w (1 - x)` and shrinking it `x' = max_o w x` (light ink: the
/// other way round), so untouched pixels keep their exact value.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn morph(
    plane: &mut [f32],
    h: usize,
    w: usize,
    pad: usize,
    taps: &[(isize, isize, f32)],
    grow: bool,
    ink: Ink,
    ws: &mut Workspace,
) {
    let take_max = grow == (ink == Ink::Light);
    let pw = pad_replicate(plane, h, w, pad, &mut ws.a);
    let padded = &ws.a[..(h + 2 * pad) * pw];
    // The result at the padded pitch: one long loop per tap.
    let n = (h - 1) * pw + w;
    let acc = grown(&mut ws.b, n);
    let centre = pad * pw + pad;
    acc.copy_from_slice(&padded[centre..centre + n]);
    for &(dy, dx, wgt) in taps {
        let off = (centre as isize + dy * pw as isize + dx) as usize;
        let src = &padded[off..off + n];
        if take_max {
            max_scaled(acc, src, wgt);
        } else {
            min_affine(acc, src, 1.0 - wgt, wgt);
        }
    }
    unpitch(acc, pw, w, plane);
}

/// `ELASTIC_BASIS` Gaussian bumps over `n` pixels, scaled so that at every pixel the squares
/// sum to 1: a field with i.i.d. N(0, s^2) coefficients then has std `s` everywhere.
fn elastic_basis(n: usize) -> Vec<f32> {
    let k = ELASTIC_BASIS;
    let width = n as f32 / k as f32;
    let mut phi = vec![0f32; k * n];
    for x in 0..n {
        let mut norm = 0f32;
        for j in 0..k {
            let c = (j as f32 + 0.5) * width - 0.5;
            let d = (x as f32 - c) / width;
            let v = (-0.5 * d * d).exp();
            phi[j * n + x] = v;
            norm += v * v;
        }
        let norm = norm.sqrt();
        for j in 0..k {
            phi[j * n + x] /= norm;
        }
    }
    phi
}

/// The elastic field's coefficient rows: `rows[a * 4 + l][x] = sum_k A_alk phi_x[k](x)`
/// for the x (`a = 0`) then the y displacement, `A_alk ~ N(0, std^2)`; each row `pitch`
/// long (zero past the image, as `phi_x`).
#[inline(always)]
fn elastic_rows(rows: &mut [f32], rng: &mut ItemRng, std: f32, phi_x: &[f32], pitch: usize) {
    let k = ELASTIC_BASIS;
    for field in rows.chunks_exact_mut(k * pitch) {
        let mut coef = [[0f32; ELASTIC_BASIS]; ELASTIC_BASIS];
        for row in coef.iter_mut() {
            for v in row.iter_mut() {
                *v = std * rng.normal();
            }
        }
        for (tl, a) in field.chunks_exact_mut(pitch).zip(coef) {
            tl.fill(0.0);
            for (px, a) in phi_x.chunks_exact(pitch).zip(a) {
                axpy(tl, px, a);
            }
        }
    }
}

/// A drawn elastic displacement: source point `(x + dx, y + dy)` of pixel `(x, y)`, with
/// `dx = sum_l phi_y[l](y) rows[l][x]` and `dy` from rows 4..8.
struct ElasticField<'a> {
    rows: &'a [f32],
    phi_y: &'a [f32],
    ramp: &'a [f32],
    h: usize,
    w: usize,
}

impl ElasticField<'_> {
    /// `base + sum_l py[l] * rows[first + l][x]`, summed in that order.
    #[inline(always)]
    fn at(&self, base: f32, py: [f32; ELASTIC_BASIS], first: usize, x: usize) -> f32 {
        const _: () = assert!(ELASTIC_BASIS == 4, "ElasticField::at sums four rows");
        let pitch = self.ramp.len();
        let r = |l: usize| self.rows[(first + l) * pitch + x];
        base + py[0] * r(0) + py[1] * r(1) + py[2] * r(2) + py[3] * r(3)
    }

    #[inline(always)]
    fn py(&self, y: usize) -> [f32; ELASTIC_BASIS] {
        std::array::from_fn(|l| self.phi_y[l * self.h + y])
    }

    /// The source coordinates of every pixel, `(sx, sy)`, one plane each.
    fn coordinates(&self, sx: &mut [f32], sy: &mut [f32]) {
        let (w, k) = (self.w, ELASTIC_BASIS);
        for (y, (rx, ry)) in sx.chunks_mut(w).zip(sy.chunks_mut(w)).enumerate() {
            let py = self.py(y);
            for (x, (vx, vy)) in rx.iter_mut().zip(ry).enumerate() {
                *vx = self.at(self.ramp[x], py, 0, x);
                *vy = self.at(y as f32, py, k, x);
            }
        }
    }

    /// What `sample_point` makes of [`coordinates`](Self::coordinates), straight from the
    /// field (`tx`, `ty`, `idx`: a plane each).
    fn sample_points(&self, tx: &mut [f32], ty: &mut [f32], idx: &mut [u32]) {
        let (h, w, k) = (self.h, self.w, ELASTIC_BASIS);
        let (pw, plane) = (padded_pitch(w), h * w);
        let (tx, ty, idx) = (&mut tx[..plane], &mut ty[..plane], &mut idx[..plane]);
        let rows = tx
            .chunks_mut(w)
            .zip(ty.chunks_mut(w))
            .zip(idx.chunks_mut(w));
        for (y, ((tx, ty), idx)) in rows.enumerate() {
            let py = self.py(y);
            for (x, ((tx, ty), i)) in tx.iter_mut().zip(ty).zip(idx).enumerate() {
                let (sx, sy) = (self.at(self.ramp[x], py, 0, x), self.at(y as f32, py, k, x));
                (*tx, *ty, *i) = sample_point(sx, sy, h, w, pw);
            }
        }
    }

    /// [`sample_points`](Self::sample_points) with AVX2, the same operations (the same
    /// bits). Rows go in whole vectors, each stored whole: a row's tail spills over the
    /// start of the next row, which is computed after it, so the buffers hold a plane plus
    /// `pitch - w` values.
    ///
    /// # Safety
    /// AVX2 must be available; `tx`, `ty` and `idx` hold at least `h * w + pitch` values;
    /// the padded image fits i32.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn sample_points_avx2(&self, tx: &mut [f32], ty: &mut [f32], idx: &mut [u32]) {
        use std::arch::x86_64::*;
        let (h, w, k) = (self.h, self.w, ELASTIC_BASIS);
        let pitch = self.ramp.len();
        assert!(tx.len().min(ty.len()).min(idx.len()) >= h * w + pitch);
        assert!(self.rows.len() >= 2 * k * pitch && pitch.is_multiple_of(LANES));
        let pad = WARP_PAD as f32;
        let (lo, xmax, ymax) = (
            _mm256_set1_ps(pad - 1.0),
            _mm256_set1_ps((w + WARP_PAD) as f32),
            _mm256_set1_ps((h + WARP_PAD) as f32),
        );
        let (padv, pwv) = (
            _mm256_set1_ps(pad),
            _mm256_set1_epi32(padded_pitch(w) as i32),
        );
        let rows = self.rows.as_ptr();
        for y in 0..h {
            let py = self.py(y).map(|p| _mm256_set1_ps(p));
            let fy = _mm256_set1_ps(y as f32);
            for x0 in (0..pitch).step_by(LANES) {
                // SAFETY: x0 + LANES <= pitch bounds the reads of rows and ramp (asserted
                // sizes), y * w + x0 + LANES <= h * w + pitch the stores.
                unsafe {
                    let row = |l: usize| _mm256_loadu_ps(rows.add(l * pitch + x0));
                    let sum = |base: __m256, first: usize| {
                        let mut v = base;
                        for (l, p) in py.iter().enumerate() {
                            v = _mm256_add_ps(v, _mm256_mul_ps(*p, row(first + l)));
                        }
                        v
                    };
                    let sx = sum(_mm256_loadu_ps(self.ramp.as_ptr().add(x0)), 0);
                    let sy = sum(fy, k);
                    // clamp(v + pad, lo, max): maxps returns its second operand for NaN
                    let fx = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(sx, padv), lo), xmax);
                    let fy = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(sy, padv), lo), ymax);
                    let (ix, iy) = (_mm256_cvttps_epi32(fx), _mm256_cvttps_epi32(fy));
                    let at = y * w + x0;
                    let frac_x = _mm256_sub_ps(fx, _mm256_cvtepi32_ps(ix));
                    let frac_y = _mm256_sub_ps(fy, _mm256_cvtepi32_ps(iy));
                    _mm256_storeu_ps(tx.as_mut_ptr().add(at), frac_x);
                    _mm256_storeu_ps(ty.as_mut_ptr().add(at), frac_y);
                    let i = _mm256_add_epi32(_mm256_mullo_epi32(iy, pwv), ix);
                    _mm256_storeu_si256(idx.as_mut_ptr().add(at) as *mut __m256i, i);
                }
            }
        }
    }
}

/// Border of the padded image the bilinear warps read: two pixels, and coordinates clamped
/// to `[-1, side]`, keep every read inside.
const WARP_PAD: usize = 2;

fn padded_pitch(w: usize) -> usize {
    w + 2 * WARP_PAD
}

fn padded_len(h: usize, w: usize) -> usize {
    padded_pitch(w).saturating_mul(h + 2 * WARP_PAD)
}

/// Where `(x, y)` samples the padded image (pitch `pw`): its top-left neighbour and the
/// weights of the right and lower neighbours.
#[inline(always)]
fn sample_point(x: f32, y: f32, h: usize, w: usize, pw: usize) -> (f32, f32, u32) {
    let pad = WARP_PAD as f32;
    // Both are in [1, side + 2] after the clamp (NaN becomes 1), so truncation is floor.
    let fx = clamp(x + pad, pad - 1.0, (w + WARP_PAD) as f32);
    let fy = clamp(y + pad, pad - 1.0, (h + WARP_PAD) as f32);
    // SAFETY: finite and within i32 (the padded image fits i32, checked by the callers):
    // `as` would add saturation code that keeps the loops from vectorising.
    let (ix, iy): (i32, i32) = unsafe { (fx.to_int_unchecked(), fy.to_int_unchecked()) };
    (fx - ix as f32, fy - iy as f32, (iy * pw as i32 + ix) as u32)
}

/// Bilinear resampling of every plane of `img` at the coordinates `(ws.c, ws.d)` (which it
/// overwrites); samples outside the image read `background`. (The tests' reference.)
#[cfg(test)]
fn warp<const AVX2: bool>(
    img: &mut [f32],
    h: usize,
    w: usize,
    background: f32,
    ws: &mut Workspace,
) {
    if padded_len(h, w) > i32::MAX as usize {
        return warp_huge(img, h, w, background, ws);
    }
    let plane = h * w;
    let pw = padded_pitch(w);
    let Workspace { c, d, idx, .. } = ws;
    if idx.len() < plane {
        idx.resize(plane, 0);
    }
    for ((x, y), i) in c[..plane]
        .iter_mut()
        .zip(&mut d[..plane])
        .zip(&mut idx[..plane])
    {
        (*x, *y, *i) = sample_point(*x, *y, h, w, pw);
    }
    warp_planes::<AVX2>(img, h, w, background, ws);
}

/// Bilinear resampling of every plane of `img` at the sample points `ws.idx`, `ws.c`,
/// `ws.d` (from `sample_point`); the padded image fits i32.
#[inline(always)]
fn warp_planes<const AVX2: bool>(
    img: &mut [f32],
    h: usize,
    w: usize,
    background: f32,
    ws: &mut Workspace,
) {
    let plane = h * w;
    let pw = padded_pitch(w);
    let Workspace { a, c, d, idx, .. } = ws;
    let (tx, ty, idx) = (&c[..plane], &d[..plane], &idx[..plane]);
    let padded = grown(a, padded_len(h, w));
    // The gathers read unchecked: make sure (cheaply) that every read is inside.
    let fits = idx.iter().fold(0, |m, &i| m.max(i)) as usize + pw + 2 <= padded.len();
    for p in img.chunks_mut(plane) {
        padded.fill(background);
        for (dst, src) in padded.chunks_mut(pw).skip(WARP_PAD).zip(p.chunks(w)) {
            dst[WARP_PAD..WARP_PAD + w].copy_from_slice(src);
        }
        #[cfg(target_arch = "x86_64")]
        if AVX2 && fits {
            // SAFETY: AVX2 is available (AVX2 is only set inside `fused_avx2`), the four
            // slices have one value per pixel, and `fits` bounds every read of `padded`.
            unsafe { bilinear_avx2(p, idx, tx, ty, padded, pw) };
            continue;
        }
        bilinear(p, idx, tx, ty, padded, pw);
    }
}

/// `warp` for images too large for 32-bit indices: plain checked scalar code.
#[cold]
fn warp_huge(img: &mut [f32], h: usize, w: usize, background: f32, ws: &mut Workspace) {
    let plane = h * w;
    let Workspace { a, c, d, .. } = ws;
    let (sx, sy) = (&c[..plane], &d[..plane]);
    let src = grown(a, plane);
    for p in img.chunks_mut(plane) {
        src.copy_from_slice(p);
        let at = |x: isize, y: isize| {
            if (0..w as isize).contains(&x) && (0..h as isize).contains(&y) {
                src[y as usize * w + x as usize]
            } else {
                background
            }
        };
        for ((v, &x), &y) in p.iter_mut().zip(sx).zip(sy) {
            let (x, y) = (
                clamp(x, -2.0, w as f32 + 1.0),
                clamp(y, -2.0, h as f32 + 1.0),
            );
            let (fx, fy) = (x.floor(), y.floor());
            let (tx, ty) = (x - fx, y - fy);
            let (ix, iy) = (fx as isize, fy as isize);
            let top = at(ix, iy) + tx * (at(ix + 1, iy) - at(ix, iy));
            let bottom = at(ix, iy + 1) + tx * (at(ix + 1, iy + 1) - at(ix, iy + 1));
            *v = top + ty * (bottom - top);
        }
    }
}

/// `p[k]`: the bilinear blend of the 2x2 block at `padded[idx[k]]` with weights `tx, ty`.
#[inline(always)]
fn bilinear(p: &mut [f32], idx: &[u32], tx: &[f32], ty: &[f32], padded: &[f32], pw: usize) {
    for ((v, &i), (&tx, &ty)) in p.iter_mut().zip(idx).zip(tx.iter().zip(ty)) {
        let i = i as usize;
        let q = &padded[i..i + pw + 2];
        let top = q[0] + tx * (q[1] - q[0]);
        let bottom = q[pw] + tx * (q[pw + 1] - q[pw]);
        *v = top + ty * (bottom - top);
    }
}

/// `bilinear` with AVX2 gathers, eight pixels at a time (the same operations, so the same
/// bits); about three times faster than scalar loads.
///
/// # Safety
/// AVX2 must be available; `idx`, `tx` and `ty` hold `p.len()` values; every
/// `idx[k] + pw + 1` indexes `padded`, and `padded.len() <= i32::MAX`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bilinear_avx2(
    p: &mut [f32],
    idx: &[u32],
    tx: &[f32],
    ty: &[f32],
    padded: &[f32],
    pw: usize,
) {
    use std::arch::x86_64::*;
    let n = p.len();
    debug_assert!(idx.len() == n && tx.len() == n && ty.len() == n);
    // Each gather reads a neighbour pair (left, right) as one 64-bit element: half the
    // elements of gathering the four neighbours one by one.
    let base = padded.as_ptr() as *const f64;
    let down = _mm_set1_epi32(pw as i32);
    // Pixels 0, 1, 4, 5 go to one gather and 2, 3, 6, 7 to the other, so that the in-lane
    // shuffles below put the left and the right neighbours back in pixel order.
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: k + 8 <= n bounds the loads and the store; the caller bounds the gathers
        // (the right neighbour, idx + 1, and idx + pw + 1 are inside `padded`).
        unsafe {
            let i = _mm256_loadu_si256(idx.as_ptr().add(k) as *const __m256i);
            let i = _mm256_permutevar8x32_epi32(i, order);
            let (ia, ib) = (_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
            let pairs = |ia: __m128i, ib: __m128i| {
                let a = _mm256_castpd_ps(_mm256_i32gather_pd::<4>(base, ia));
                let b = _mm256_castpd_ps(_mm256_i32gather_pd::<4>(base, ib));
                (
                    _mm256_shuffle_ps::<0x88>(a, b),
                    _mm256_shuffle_ps::<0xDD>(a, b),
                )
            };
            let (q0, q1) = pairs(ia, ib);
            let (q2, q3) = pairs(_mm_add_epi32(ia, down), _mm_add_epi32(ib, down));
            let fx = _mm256_loadu_ps(tx.as_ptr().add(k));
            let fy = _mm256_loadu_ps(ty.as_ptr().add(k));
            let top = _mm256_add_ps(q0, _mm256_mul_ps(fx, _mm256_sub_ps(q1, q0)));
            let bottom = _mm256_add_ps(q2, _mm256_mul_ps(fx, _mm256_sub_ps(q3, q2)));
            let v = _mm256_add_ps(top, _mm256_mul_ps(fy, _mm256_sub_ps(bottom, top)));
            _mm256_storeu_ps(p.as_mut_ptr().add(k), v);
        }
        k += 8;
    }
    bilinear(&mut p[k..], &idx[k..], &tx[k..], &ty[k..], padded, pw);
}

/// Linear resampling along rows: `dst[y][x] = src[y][x + shift(y)]` (`w_in` columns in,
/// `w_out` out); columns outside the source read `background`. Each row is one vectorised
/// loop, which is what makes rotations and shears cheap.
#[inline(always)]
fn shift_rows<const AVX2: bool>(
    src: &[f32],
    w_in: usize,
    dst: &mut [f32],
    w_out: usize,
    shift: impl Fn(usize) -> f32,
    background: f32,
    buf: &mut Vec<f32>,
) {
    let p = w_out + 4;
    let row = grown(buf, 2 * p + w_in);
    row.fill(background);
    for (y, (s, d)) in src.chunks(w_in).zip(dst.chunks_mut(w_out)).enumerate() {
        row[p..p + w_in].copy_from_slice(s);
        // Shifts past either end only read background; the clamp keeps the slices in range.
        let sh = clamp(shift(y), -(w_out as f32) - 2.0, w_in as f32 + 2.0);
        let n = sh.floor();
        let f = sh - n;
        let start = (p as isize + n as isize) as usize;
        lerp::<AVX2>(
            d,
            &row[start..start + w_out],
            &row[start + 1..start + 1 + w_out],
            f,
        );
    }
}

/// `dst` (`w x h`) = the transpose of `src` (`h x w`): 8 x 8 tiles in AVX2 registers, the
/// edges one value at a time.
#[inline(always)]
fn transpose<const AVX2: bool>(src: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    // Checked once here, not per element: this loop is a large part of a rotation.
    assert!(src.len() >= h * w && dst.len() >= h * w);
    let tiled = AVX2 && cfg!(target_arch = "x86_64");
    let (h8, w8) = if tiled {
        (h - h % 8, w - w % 8)
    } else {
        (0, 0)
    };
    #[cfg(target_arch = "x86_64")]
    for y in (0..h8).step_by(8) {
        for x in (0..w8).step_by(8) {
            // SAFETY: AVX2 is available (AVX2 is only set inside `fused_avx2`, or by
            // a test that detected it); the tile's rows y..y+8 and columns x..x+8 lie inside
            // both planes (checked above).
            unsafe {
                transpose8_avx2(
                    src.as_ptr().add(y * w + x),
                    w,
                    dst.as_mut_ptr().add(x * h + y),
                    h,
                )
            };
        }
    }
    for y in 0..h {
        let from = if y < h8 { w8 } else { 0 };
        for x in from..w {
            // SAFETY: y < h and x < w, so both indices are below h * w <= both lengths.
            unsafe { *dst.get_unchecked_mut(x * h + y) = *src.get_unchecked(y * w + x) };
        }
    }
}

/// One 8 x 8 tile: rows at `src + i * src_pitch` to columns at `dst + i * dst_pitch`.
///
/// # Safety
/// AVX2 must be available, and the 8 rows of 8 values at both addresses must be in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8_avx2(src: *const f32, src_pitch: usize, dst: *mut f32, dst_pitch: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller bounds all eight loads and stores.
    unsafe {
        let r = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| _mm256_loadu_ps(src.add(i * src_pitch)));
        let lo = |a, b| _mm256_unpacklo_ps(a, b);
        let hi = |a, b| _mm256_unpackhi_ps(a, b);
        let t = [
            lo(r[0], r[1]),
            hi(r[0], r[1]),
            lo(r[2], r[3]),
            hi(r[2], r[3]),
            lo(r[4], r[5]),
            hi(r[4], r[5]),
            lo(r[6], r[7]),
            hi(r[6], r[7]),
        ];
        // Within each 128-bit half: four columns of four rows.
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for i in 0..4 {
            let low = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
            let high = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
            _mm256_storeu_ps(dst.add(i * dst_pitch), low);
            _mm256_storeu_ps(dst.add((i + 4) * dst_pitch), high);
        }
    }
}

/// Rotates one plane: `out(p) = in(centre + R(-theta) (p - centre))`, as Paeth's three
/// shears `R = Sx(a) Sy(b) Sx(a)`, `a = tan(theta / 2)`, `b = -sin(theta)`, each a
/// row-wise linear resampling. The intermediate images are widened so nothing is cut off.
#[inline(always)]
fn rotate<const AVX2: bool>(
    plane: &mut [f32],
    h: usize,
    w: usize,
    theta: f32,
    background: f32,
    ws: &mut Workspace,
) {
    let (a, b) = ((theta / 2.0).tan(), -theta.sin());
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let e = (a.abs() * h as f32 / 2.0).ceil() as usize + 1;
    let w2 = w + 2 * e;
    let ef = e as f32;
    let Workspace { b: row, c, d, .. } = ws;
    let t1 = grown(c, h * w2);
    shift_rows::<AVX2>(
        plane,
        w,
        t1,
        w2,
        |y| -ef + a * (y as f32 - cy),
        background,
        row,
    );
    let tt = grown(d, w2 * h);
    transpose::<AVX2>(t1, h, w2, tt);
    let t2 = grown(c, w2 * h);
    shift_rows::<AVX2>(tt, h, t2, h, |x| b * (x as f32 - ef - cx), background, row);
    let t3 = grown(d, h * w2);
    transpose::<AVX2>(t2, w2, h, t3);
    shift_rows::<AVX2>(
        t3,
        w2,
        plane,
        w,
        |y| ef + a * (y as f32 - cy),
        background,
        row,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glyphs;

    fn glyph(size: usize, instance: u64) -> Vec<f32> {
        let mut raw = vec![0u8; size * size];
        glyphs::render_one(7, 3, instance, size, &mut raw).unwrap();
        let mut out = vec![0f32; raw.len()];
        u8::load(&raw, &mut out);
        out
    }

    fn corrupted(name: &str, sev: i64, img: &[f32], seed: u64, item: u64) -> Vec<f32> {
        let c = Corruption::new(name, sev, "dark", [1, 28, 28]).unwrap();
        let mut out = img.to_vec();
        c.apply(
            &mut out,
            &StreamKey::new(seed, 5),
            item,
            &mut Workspace::default(),
        )
        .unwrap();
        out
    }

    fn mad(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn bounded_deterministic_and_monotone() {
        let imgs: Vec<Vec<f32>> = (0..4).map(|i| glyph(28, i)).collect();
        for name in NAMES {
            let mut last = 0.0;
            for sev in 1..=5 {
                let mut total = 0.0;
                for (i, img) in imgs.iter().enumerate() {
                    let a = corrupted(name, sev, img, 11, i as u64);
                    assert_eq!(a, corrupted(name, sev, img, 11, i as u64), "{name}");
                    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
                    total += mad(&a, img);
                }
                assert!(total > last, "{name}: severity {sev} {total} <= {last}");
                last = total;
            }
        }
    }

    #[test]
    fn randomness_depends_on_seed_stream_and_item() {
        let img = glyph(28, 0);
        let c = Corruption::new("gaussian_noise", 3, "dark", [1, 28, 28]).unwrap();
        let mut ws = Workspace::default();
        let run = |seed, stream, item, ws: &mut Workspace| {
            let mut x = img.clone();
            c.apply(&mut x, &StreamKey::new(seed, stream), item, ws)
                .unwrap();
            x
        };
        let base = run(1, 2, 3, &mut ws);
        assert_ne!(base, run(2, 2, 3, &mut ws));
        assert_ne!(base, run(1, 3, 3, &mut ws));
        assert_ne!(base, run(1, 2, 4, &mut ws));
        assert_eq!(base, run(1, 2, 3, &mut ws));
    }

    #[test]
    fn ink_polarity_mirrors() {
        // Thickening dark ink on light = thickening light ink on dark, mirrored values.
        let img = glyph(28, 1);
        let inverted: Vec<f32> = img.iter().map(|v| 1.0 - v).collect();
        for name in ["thicken", "thin", "occlusion", "rotate", "elastic"] {
            let dark = Corruption::new(name, 3, "dark", [1, 28, 28]).unwrap();
            let light = Corruption::new(name, 3, "light", [1, 28, 28]).unwrap();
            let (mut a, mut b) = (img.clone(), inverted.clone());
            dark.apply(&mut a, &StreamKey::new(0, 0), 0, &mut Workspace::default())
                .unwrap();
            light
                .apply(&mut b, &StreamKey::new(0, 0), 0, &mut Workspace::default())
                .unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert!((x - (1.0 - y)).abs() < 1e-5, "{name}");
            }
        }
        // Thickening dark ink darkens; thinning lightens.
        let thick = corrupted("thicken", 3, &img, 0, 0);
        let thin = corrupted("thin", 3, &img, 0, 0);
        assert!(thick.iter().zip(&img).all(|(a, b)| a <= b));
        assert!(thin.iter().zip(&img).all(|(a, b)| a >= b));
    }

    #[test]
    fn batch_matches_single_items_and_u8_rounds_f32() {
        let imgs: Vec<u8> = (0..40)
            .flat_map(|i| {
                let mut raw = vec![0u8; 3 * 20 * 24];
                glyphs::render_one(1, i, 0, 20, &mut raw[..400]).unwrap();
                raw
            })
            .collect();
        for name in NAMES {
            let c = Corruption::new(name, 4, "dark", [3, 20, 24]).unwrap();
            let d = c.item_size();
            let mut out = vec![0u8; imgs.len()];
            c.corrupt_batch(&imgs, &mut out, 9, 2).unwrap();
            let floats: Vec<f32> = imgs.iter().map(|&v| v as f32 / 255.0).collect();
            let mut fout = vec![0f32; floats.len()];
            c.corrupt_batch(&floats, &mut fout, 9, 2).unwrap();
            let mut rounded = vec![0u8; fout.len()];
            unit_to_u8(&fout, &mut rounded);
            assert_eq!(rounded, out, "{name}");
            for j in [0, 17, 39] {
                let mut one = vec![0u8; d];
                let src = &imgs[j * d..(j + 1) * d];
                let mut unit = vec![0f32; d];
                u8::load(src, &mut unit);
                c.apply(
                    &mut unit,
                    &StreamKey::new(9, 2),
                    j as u64,
                    &mut Workspace::default(),
                )
                .unwrap();
                unit_to_u8(&unit, &mut one);
                assert_eq!(one, &out[j * d..(j + 1) * d], "{name} item {j}");
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let e = |r: Result<Corruption>| r.unwrap_err().to_string();
        assert!(e(Corruption::new("fog", 1, "dark", [1, 4, 4])).contains("corruption"));
        assert!(e(Corruption::new("rotate", 0, "dark", [1, 4, 4])).contains("severity"));
        assert!(e(Corruption::new("rotate", 6, "dark", [1, 4, 4])).contains("1..=5"));
        assert!(e(Corruption::new("rotate", 1, "grey", [1, 4, 4])).contains("ink"));
        assert!(e(Corruption::new("rotate", 1, "dark", [1, 0, 4])).contains("pixel"));
        assert!(Target::parse("all")
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
        let c = Corruption::new("contrast", 1, "dark", [1, 2, 2]).unwrap();
        let mut out = [0f32; 8];
        assert!(c.corrupt_batch(&[0.5f32; 7], &mut out[..7], 0, 0).is_err());
        assert!(c.corrupt_batch(&[0.5f32; 8], &mut out[..4], 0, 0).is_err());
        let mut bad = [0.5f32; 8];
        bad[3] = 1.5;
        assert!(c.corrupt_batch(&bad, &mut out, 0, 0).is_err());
        bad[3] = f32::NAN;
        assert!(c.corrupt_batch(&bad, &mut out, 0, 0).is_err());
        assert!(c
            .apply(
                &mut [0.0; 3],
                &StreamKey::new(0, 0),
                0,
                &mut Workspace::default()
            )
            .is_err());
    }

    #[test]
    fn tiny_and_odd_shapes_work() {
        for name in NAMES {
            for shape in [[1, 1, 1], [2, 1, 5], [1, 7, 3], [3, 9, 9]] {
                for sev in [1, 5] {
                    let c = Corruption::new(name, sev, "light", shape).unwrap();
                    let mut x: Vec<f32> =
                        (0..c.item_size()).map(|i| (i % 7) as f32 / 6.0).collect();
                    c.apply(&mut x, &StreamKey::new(3, 4), 5, &mut Workspace::default())
                        .unwrap();
                    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
                }
            }
        }
    }

    #[test]
    fn three_shear_rotation_matches_direct_bilinear() {
        // A smooth glyph (blurred), rotated both ways: Paeth's shears vs one bilinear warp.
        let mut img = glyph(28, 2);
        let blur = Corruption::new("gaussian_blur", 3, "dark", [1, 28, 28]).unwrap();
        blur.apply(
            &mut img,
            &StreamKey::new(0, 0),
            0,
            &mut Workspace::default(),
        )
        .unwrap();
        for theta in [0.2f32, -0.6, 1.0] {
            let mut ws = Workspace::default();
            let mut fast = img.clone();
            rotate::<false>(&mut fast, 28, 28, theta, 1.0, &mut ws);
            let (sin, cos) = theta.sin_cos();
            let c = 13.5;
            let mut sx = vec![0f32; 784];
            let mut sy = vec![0f32; 784];
            for y in 0..28 {
                for x in 0..28 {
                    let (dx, dy) = (x as f32 - c, y as f32 - c);
                    sx[y * 28 + x] = cos * dx + sin * dy + c;
                    sy[y * 28 + x] = -sin * dx + cos * dy + c;
                }
            }
            ws.c = sx;
            ws.d = sy;
            let mut direct = img.clone();
            warp::<false>(&mut direct, 28, 28, 1.0, &mut ws);
            let diff = mad(&fast, &direct);
            assert!(diff < 0.01, "theta {theta}: {diff}");
            assert!(
                mad(&fast, &img) > 5.0 * diff,
                "theta {theta}: it does rotate"
            );
        }
    }

    #[test]
    fn avx2_and_portable_paths_agree() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // 29 x 29 is not a whole number of 16-pixel noise steps.
            for side in [28, 29] {
                let img: Vec<f32> = (0..3).flat_map(|i| glyph(side, i)).collect();
                for name in NAMES {
                    let c = Corruption::new(name, 4, "dark", [3, side, side]).unwrap();
                    let key = StreamKey::new(3, 1);
                    let (mut a, mut b) = (img.clone(), img.clone());
                    let mut ws = Workspace::default();
                    c.apply_impl::<false>(&mut a, Draw::Item(&key, 2), &mut ws);
                    // SAFETY: AVX2 is available (checked above).
                    unsafe { c.fused_avx2(&mut b, |_| {}, |_| {}, Draw::Item(&key, 2), &mut ws) };
                    assert_eq!(a, b, "{name} {side}");
                    assert_ne!(a, img, "{name} {side}");
                }
            }
        }
    }

    #[test]
    fn elastic_is_the_bilinear_warp_of_its_field() {
        // The fused sample points (rows in whole vectors, spilling into the next row) give
        // what the plain warp makes of the field's coordinates, on both paths.
        for shape in [[1, 28, 28], [2, 17, 13], [1, 5, 8], [1, 1, 1], [3, 9, 31]] {
            let c = Corruption::new("elastic", 5, "dark", shape).unwrap();
            let Plan::Elastic { phi_x, phi_y, ramp } = &c.plan else {
                unreachable!("elastic plan")
            };
            let [_, h, w] = shape;
            let n = shape.iter().product();
            let img: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
            let key = StreamKey::new(5, 2);
            let mut rows = vec![0f32; 2 * ELASTIC_BASIS * ramp.len()];
            let std = ELASTIC_STD[4] * h.min(w) as f32 / REFERENCE_SIDE;
            elastic_rows(&mut rows, &mut key.item(9), std, phi_x, ramp.len());
            let field = ElasticField {
                rows: &rows,
                phi_y,
                ramp,
                h,
                w,
            };
            let mut ws = Workspace {
                c: vec![0.0; h * w],
                d: vec![0.0; h * w],
                ..Default::default()
            };
            field.coordinates(&mut ws.c, &mut ws.d);
            let mut want = img.clone();
            warp::<false>(&mut want, h, w, c.ink.background(), &mut ws);
            let mut got = img.clone();
            c.apply_impl::<false>(&mut got, Draw::Item(&key, 9), &mut ws);
            assert_eq!(got, want, "{shape:?}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut fast = img.clone();
                let draw = Draw::Item(&key, 9);
                // SAFETY: AVX2 is available (checked above).
                unsafe { c.fused_avx2(&mut fast, |_| {}, |_| {}, draw, &mut ws) };
                assert_eq!(fast, want, "{shape:?} avx2");
            }
        }
    }

    #[test]
    fn byte_path_is_the_rounded_float_path() {
        let mut rng = item_rng(9, 9, 9);
        for shape in [[1, 28, 28], [1, 29, 29], [3, 5, 7], [1, 1, 1]] {
            let n: usize = shape.iter().product();
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            for (name, ink, sev) in (1..=5).flat_map(|sev| {
                [
                    ("occlusion", "dark"),
                    ("occlusion", "light"),
                    ("impulse_noise", "dark"),
                    ("gaussian_noise", "dark"),
                ]
                .map(|(n, i)| (n, i, sev))
            }) {
                let c = Corruption::new(name, sev, ink, shape).unwrap();
                let key = StreamKey::new(5, 6);
                let mut unit = vec![0f32; n];
                u8::load(&bytes, &mut unit);
                c.apply(&mut unit, &key, 7, &mut Workspace::default())
                    .unwrap();
                let mut want = vec![0u8; n];
                unit_to_u8(&unit, &mut want);
                let mut got = vec![0u8; n];
                assert!(c.apply_bytes(&bytes, &mut got, &key, 7));
                assert_eq!(got, want, "{name} {ink} {sev} {shape:?}");
                // The floats too: the sampler converts these bytes for float output.
                for (&g, &u) in got.iter().zip(&unit) {
                    assert_eq!(byte_to_unit(g).to_bits(), clamp(u, 0.0, 1.0).to_bits());
                }
                if shape[1] >= 28 {
                    assert_ne!(got, bytes, "{name} {ink} {sev} {shape:?}");
                }
                // The portable steps give the same bytes as the vector ones.
                let mut portable = bytes.clone();
                let (draw, isa) = (&mut key.item(7), Isa::Portable);
                if name == "impulse_noise" {
                    let amount = IMPULSE_AMOUNT[sev as usize - 1];
                    impulse_noise_bytes(&bytes, &mut portable, amount, draw, isa);
                    assert_eq!(portable, want, "portable impulse {sev} {shape:?}");
                }
                if let Plan::Noise(table) = &c.plan {
                    gaussian_noise_bytes(&bytes, &mut portable, table, draw, isa);
                    assert_eq!(portable, want, "portable noise {sev} {shape:?}");
                }
            }
        }
        let blur = Corruption::new("gaussian_blur", 1, "dark", [1, 2, 2]).unwrap();
        let mut out = [7u8; 4];
        assert!(!blur.apply_bytes(&[1, 2, 3, 4], &mut out, &StreamKey::new(0, 0), 0));
        assert_eq!(out, [7; 4], "nothing written");
    }

    #[test]
    fn tiled_transpose_matches_the_definition() {
        for (h, w) in [(1, 1), (8, 8), (9, 17), (28, 40), (40, 28), (3, 16)] {
            let src: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
            let mut want = vec![0f32; h * w];
            for y in 0..h {
                for x in 0..w {
                    want[x * h + y] = src[y * w + x];
                }
            }
            let mut got = vec![-1f32; h * w];
            transpose::<false>(&src, h, w, &mut got);
            assert_eq!(got, want, "{h}x{w} portable");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = vec![-1f32; h * w];
                transpose::<true>(&src, h, w, &mut got);
                assert_eq!(got, want, "{h}x{w} tiled");
            }
        }
    }

    #[test]
    fn byte_to_unit_is_the_division_for_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut loaded = [0f32; 256];
        u8::load(&bytes, &mut loaded);
        for (&v, &y) in bytes.iter().zip(&loaded) {
            let divided = v as f32 / 255.0;
            assert_eq!(byte_to_unit(v).to_bits(), divided.to_bits(), "byte {v}");
            assert_eq!(y.to_bits(), divided.to_bits(), "byte {v}");
        }
    }

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
    fn noisy_levels_are_exact_bytes() {
        // (255 b/255 + d) / 255 is (b + d) / 255 to the bit, clamped to the byte's.
        for b in 0..=255u8 {
            for d in -600..=600 {
                let v = levels_to_unit(byte_to_unit(b) * 255.0 + d as f32);
                let want = byte_to_unit((b as i32 + d).clamp(0, 255) as u8);
                assert_eq!(clamp(v, 0.0, 1.0).to_bits(), want.to_bits(), "{b} {d}");
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
