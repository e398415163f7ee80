//! Image corruptions at five severities, after Hendrycks & Dietterich's ImageNet-C / CIFAR-10-C
//! and Mu & Gilmer's MNIST-C, with parameters scaled to 28x28 glyphs: Gaussian and impulse
//! noise, Gaussian blur, thickening and thinning of the strokes, elastic deformation,
//! occlusion, contrast, rotation and shear. [`INFO`] lists each one's family, the parameter
//! its severity sets with the five values, and what it does.
//!
//! Lengths (sigma, radii, displacement, patch side) are for 28x28 and scale with
//! `min(H, W) / 28`. Images are `(C, H, W)` in `[0, 1]` and stay there (results are clamped).
//! `ink` is the polarity: `Dark` (Omniglot: ink towards 0 on a white background) or `Light`.
//! Thicken/thin act on the ink amount (`1 - x` for dark ink); occluders are ink-coloured;
//! geometric warps fill what comes from outside the image with the background.
//!
//! Randomness: item `item` under `(seed, stream)` draws from xoshiro256++ seeded by `item`
//! mixed into 32 bytes of ChaCha8 keyed by `(seed, "corrupt")` on stream `stream` (the
//! sampler's episode index) ([`StreamKey`]); the noises' per-pixel draws come from eight
//! xoshiro256++ generators in lock step seeded from it (see `noise`). So a corruption is a
//! pure function of `(seed, stream, item, name, severity, ink)`. Severities share the random
//! draws: noise is the same pattern scaled, patches are added one by one, so the difference
//! from the clean image grows with the severity.
//!
//! This file holds the kinds, the options, the per-shape plan ([`Corruption::new`]) and the
//! scratch buffers. `apply` runs a corruption (one image, fused with conversions, batches,
//! bytes); `info` holds the severity parameters and [`INFO`]; `rng` the random streams;
//! `simd` the shared loop kernels. One file per family does the work: `noise`, `blur`,
//! `morphology` (thicken, thin), `elastic` (with `warp`, bilinear resampling), `occlusion`,
//! `contrast`, `geometric` (rotate, shear).

use crate::error::{checked_product, value_err, Result};

mod apply;
mod blur;
mod contrast;
mod elastic;
mod geometric;
mod info;
mod morphology;
mod noise;
mod occlusion;
mod rng;
mod simd;
#[cfg(test)]
mod tests;
mod warp;

use blur::gaussian_taps;
use elastic::ElasticPlan;
pub use info::{Info, INFO};
use info::{
    BLUR_SIGMA, GAUSSIAN_NOISE_STD, OCCLUSION_SIDE, REFERENCE_SIDE, THICKEN_RADIUS, THIN_RADIUS,
};
use morphology::morph_plan;
use noise::noise_levels;
pub use rng::{item_rng, ItemRng, StreamKey};

/// The corruption names, in a fixed order.
pub const NAMES: [&str; 10] = info::names();

/// Severities run `1..=MAX_SEVERITY`.
pub const MAX_SEVERITY: u8 = 5;

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
    Elastic(ElasticPlan),
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
    crate::memory::grow_scratch(v, n, 0.0)
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
            Kind::Elastic => Plan::Elastic(ElasticPlan::new(h, w)),
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
}
