//! Tests of the corruptions as a whole: bounds, determinism, monotone severities, ink
//! polarity, batches against single items, the byte paths against the float paths, and the
//! AVX2 paths against the portable ones.

use super::apply::Draw;
use super::info::IMPULSE_AMOUNT;
use super::noise::{gaussian_noise_bytes, impulse_noise_bytes, Isa};
use super::*;
use crate::glyphs;
use crate::pixel::{byte_to_unit, clamp, unit_to_u8, Pixel};

pub(super) fn glyph(size: usize, instance: u64) -> Vec<f32> {
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

pub(super) fn mad(a: &[f32], b: &[f32]) -> f64 {
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
                let mut x: Vec<f32> = (0..c.item_size()).map(|i| (i % 7) as f32 / 6.0).collect();
                c.apply(&mut x, &StreamKey::new(3, 4), 5, &mut Workspace::default())
                    .unwrap();
                assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
            }
        }
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
