//! The parameters the severities set, and [`INFO`]: per corruption, its family, that
//! parameter, its five values and what it does. The plans read the same constants as the
//! table, so the documentation built from it (the Python package's table) cannot drift.

use super::elastic::ELASTIC_BASIS;

pub(super) const GAUSSIAN_NOISE_STD: [f32; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];
pub(super) const IMPULSE_AMOUNT: [f32; 5] = [0.03, 0.06, 0.09, 0.17, 0.27];
pub(super) const BLUR_SIGMA: [f32; 5] = [0.5, 0.75, 1.0, 1.25, 1.5];
pub(super) const THICKEN_RADIUS: [f32; 5] = [0.4, 0.7, 1.0, 1.4, 1.8];
pub(super) const THIN_RADIUS: [f32; 5] = [0.15, 0.3, 0.45, 0.6, 0.8];
pub(super) const ELASTIC_STD: [f32; 5] = [0.6, 0.9, 1.2, 1.6, 2.0];
pub(super) const OCCLUSION_PATCHES: [usize; 5] = [1, 2, 3, 4, 5];
pub(super) const OCCLUSION_SIDE: f32 = 6.0;
pub(super) const CONTRAST_FACTOR: [f32; 5] = [0.75, 0.5, 0.4, 0.3, 0.15];
pub(super) const ROTATE_RADIANS: [f32; 5] = [0.2, 0.4, 0.6, 0.8, 1.0];
pub(super) const SHEAR_FACTOR: [f32; 5] = [0.2, 0.4, 0.6, 0.8, 1.0];
/// Image side the lengths above are given for.
pub(super) const REFERENCE_SIDE: f32 = 28.0;

/// What one corruption does, for documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Info {
    pub name: &'static str,
    /// What it changes: "noise", "blur", "morphology", "elastic", "occlusion",
    /// "photometric" or "geometric".
    pub family: &'static str,
    /// What the severity sets, with its unit.
    pub parameter: &'static str,
    /// The parameter at severities 1 to 5; lengths for 28x28 images.
    pub values: [f32; 5],
    /// What it does, in one line.
    pub description: &'static str,
}

// The texts below name these.
const _: () = assert!(OCCLUSION_SIDE == 6.0, "the occlusion row says 6x6 px");
const _: () = assert!(ELASTIC_BASIS == 4, "the elastic row says 4x4 bumps");

/// Every corruption, in the order of [`NAMES`](super::NAMES) (which is made from it).
pub const INFO: [Info; 10] = [
    Info {
        name: "gaussian_noise",
        family: "noise",
        parameter: "std",
        values: GAUSSIAN_NOISE_STD,
        description: "x + N(0, std^2) per pixel, in whole grey levels (ImageNet-C)",
    },
    Info {
        name: "impulse_noise",
        family: "noise",
        parameter: "amount",
        values: IMPULSE_AMOUNT,
        description: "that fraction of pixels set to 0 or 1, half each (salt and pepper; \
                      ImageNet-C)",
    },
    Info {
        name: "gaussian_blur",
        family: "blur",
        parameter: "sigma (px)",
        values: BLUR_SIGMA,
        description: "Gaussian filter, edges replicated (CIFAR-10-C: 0.4-1 px; 2 px strokes \
                      here)",
    },
    Info {
        name: "thicken",
        family: "morphology",
        parameter: "radius (px)",
        values: THICKEN_RADIUS,
        description: "dilation of the ink by a soft disk",
    },
    Info {
        name: "thin",
        family: "morphology",
        parameter: "radius (px)",
        values: THIN_RADIUS,
        description: "erosion of the ink by a soft disk",
    },
    Info {
        name: "elastic",
        family: "elastic",
        parameter: "shift std (px)",
        values: ELASTIC_STD,
        description: "smooth random displacement field (4x4 Gaussian bumps), bilinear \
                      resampling",
    },
    Info {
        name: "occlusion",
        family: "occlusion",
        parameter: "squares of 6x6 px",
        values: counts(OCCLUSION_PATCHES),
        description: "ink-coloured squares at random places (like MNIST-C's ink occluders)",
    },
    Info {
        name: "contrast",
        family: "photometric",
        parameter: "factor",
        values: CONTRAST_FACTOR,
        description: "(x - mean) * factor + mean per channel (CIFAR-10-C)",
    },
    Info {
        name: "rotate",
        family: "geometric",
        parameter: "angle (rad)",
        values: ROTATE_RADIANS,
        description: "rotation about the centre, random sign (MNIST-C); three row shears \
                      (Paeth)",
    },
    Info {
        name: "shear",
        family: "geometric",
        parameter: "shear factor",
        values: SHEAR_FACTOR,
        description: "x' = x + k (y - centre), random sign (MNIST-C)",
    },
];

/// The names of [`INFO`], in its order.
pub(super) const fn names() -> [&'static str; INFO.len()] {
    let mut out = [""; INFO.len()];
    let mut i = 0;
    while i < INFO.len() {
        out[i] = INFO[i].name;
        i += 1;
    }
    out
}

/// Counts as table values.
const fn counts(v: [usize; 5]) -> [f32; 5] {
    let mut out = [0.0; 5];
    let mut i = 0;
    while i < 5 {
        out[i] = v[i] as f32;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corruptions::{Kind, NAMES};

    #[test]
    fn each_row_is_its_kind_with_the_plans_values() {
        let rows = [
            (Kind::GaussianNoise, GAUSSIAN_NOISE_STD),
            (Kind::ImpulseNoise, IMPULSE_AMOUNT),
            (Kind::GaussianBlur, BLUR_SIGMA),
            (Kind::Thicken, THICKEN_RADIUS),
            (Kind::Thin, THIN_RADIUS),
            (Kind::Elastic, ELASTIC_STD),
            (Kind::Occlusion, [1.0, 2.0, 3.0, 4.0, 5.0]),
            (Kind::Contrast, CONTRAST_FACTOR),
            (Kind::Rotate, ROTATE_RADIANS),
            (Kind::Shear, SHEAR_FACTOR),
        ];
        assert_eq!(OCCLUSION_PATCHES, [1, 2, 3, 4, 5]);
        for ((kind, values), (info, name)) in rows.into_iter().zip(INFO.iter().zip(NAMES)) {
            assert_eq!((kind.name(), info.name), (name, name));
            assert_eq!(Kind::parse(name, "name").unwrap(), kind);
            assert_eq!(info.values, values, "{name}");
        }
    }
}
