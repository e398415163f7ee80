//! The sampler's tests: episodes, class subsets, corrupted items and the corruption cache.

use super::*;
use crate::corruptions::{StreamKey, Workspace};
use crate::pixel::unit_to_u8;

fn toy(n_classes: usize, per: usize, d: usize) -> (Vec<u8>, Vec<i64>) {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n_classes * per {
        labels.push((i % n_classes) as i64);
        images.extend(std::iter::repeat_n((i % 251) as u8, d));
    }
    (images, labels)
}

type Outputs = (Vec<u8>, Vec<i64>, Vec<u8>, Vec<i64>, Vec<i64>);

fn run(s: &EpisodeSampler, images: &[u8], start: u64, count: usize) -> Outputs {
    let (w, k, q, d) = (s.ways, s.shots, s.queries, s.item_size);
    let mut sx = vec![0u8; count * w * k * d];
    let mut sy = vec![0i64; count * w * k];
    let mut qx = vec![0u8; count * w * q * d];
    let mut qy = vec![0i64; count * w * q];
    let mut cl = vec![0i64; count * w];
    let table = PixelTable::new(1, d, &[], &[]).unwrap();
    s.sample_into(
        images,
        &table,
        start,
        count,
        BatchOut {
            support_x: &mut sx,
            support_y: &mut sy,
            query_x: &mut qx,
            query_y: &mut qy,
            classes: &mut cl,
        },
    )
    .unwrap();
    (sx, sy, qx, qy, cl)
}

#[test]
fn episodes_are_valid_and_split_independent() {
    let (images, labels) = toy(12, 7, 3);
    let s = EpisodeSampler::new(&labels, 3, 5, 2, 3, 42, None).unwrap();
    let whole = run(&s, &images, 10, 6);
    let a = run(&s, &images, 10, 2);
    let b = run(&s, &images, 12, 4);
    assert_eq!([a.0, b.0].concat(), whole.0);
    assert_eq!([a.4, b.4].concat(), whole.4);
    for j in 0..6 {
        let cl = &whole.4[j * 5..(j + 1) * 5];
        let mut sorted = cl.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "ways are distinct");
        let mut picks = Vec::new();
        let mut cls = vec![0; 5];
        s.draw(10 + j as u64, &mut cls, &mut picks);
        assert_eq!(cls, cl);
        for way in 0..5 {
            let mine = &picks[way * 5..(way + 1) * 5];
            let mut u = mine.to_vec();
            u.sort();
            u.dedup();
            assert_eq!(u.len(), 5, "items are distinct");
            assert!(mine.iter().all(|&i| labels[i as usize] == cl[way]));
        }
    }
}

#[test]
fn sparse_labels_sample_as_their_ranks() {
    // Class ids far apart (up to 2^62) cost nothing: the same episodes as the dense
    // ids 0..n, with the classes reported as given; likewise with a class subset.
    let (images, dense) = toy(12, 7, 3);
    let id = |c: i64| c * c * (1 << 50) + c;
    let sparse: Vec<i64> = dense.iter().map(|&c| id(c)).collect();
    let subset = [1i64, 4, 5, 9, 11];
    let subset_ids: Vec<i64> = subset.iter().rev().map(|&c| id(c)).collect();
    for (want, got) in [
        (None, None),
        (Some(subset.as_slice()), Some(subset_ids.as_slice())),
    ] {
        let a = EpisodeSampler::new(&dense, 3, 4, 2, 3, 7, want).unwrap();
        let b = EpisodeSampler::new(&sparse, 3, 4, 2, 3, 7, got).unwrap();
        let (ra, rb) = (run(&a, &images, 5, 6), run(&b, &images, 5, 6));
        assert_eq!((&ra.0, &ra.1, &ra.2, &ra.3), (&rb.0, &rb.1, &rb.2, &rb.3));
        assert_eq!(ra.4.iter().map(|&c| id(c)).collect::<Vec<_>>(), rb.4);
    }
    let err = EpisodeSampler::new(&sparse, 3, 4, 2, 3, 7, Some(&[id(3) + 1]));
    let msg = format!("{}", err.expect_err("an absent class"));
    assert!(
        msg.contains("has no items") && msg.contains("12 classes in 0..="),
        "{msg}"
    );
}

#[test]
fn corrupted_items_match_the_corruption_of_clean_items() {
    let (images, labels) = toy(12, 7, 16);
    let clean = EpisodeSampler::new(&labels, 16, 5, 2, 3, 42, None).unwrap();
    for (name, target) in [
        ("gaussian_noise", Target::Query),
        ("rotate", Target::Support),
        ("thicken", Target::Both),
    ] {
        let c = Corruption::new(name, 3, "dark", [1, 4, 4]).unwrap();
        let s = clean.clone().with_corruption(c.clone(), target).unwrap();
        let base = run(&clean, &images, 3, 6);
        let whole = run(&s, &images, 3, 6);
        let a = run(&s, &images, 3, 2);
        let b = run(&s, &images, 5, 4);
        assert_eq!([a.0, b.0].concat(), whole.0, "{name}: split invariance");
        assert_eq!([a.2, b.2].concat(), whole.2, "{name}: split invariance");
        assert_eq!((&base.1, &base.3, &base.4), (&whole.1, &whole.3, &whole.4));
        let (ns, nq) = (5 * 2, 5 * 3);
        for j in 0..6 {
            let items = base.0[j * ns * 16..(j + 1) * ns * 16]
                .chunks(16)
                .chain(base.2[j * nq * 16..(j + 1) * nq * 16].chunks(16));
            let got = whole.0[j * ns * 16..(j + 1) * ns * 16]
                .chunks(16)
                .chain(whole.2[j * nq * 16..(j + 1) * nq * 16].chunks(16));
            for (pos, (src, got)) in items.zip(got).enumerate() {
                let hit = if pos < ns {
                    target.support()
                } else {
                    target.query()
                };
                if !hit {
                    assert_eq!(src, got);
                    continue;
                }
                let mut unit = vec![0f32; 16];
                u8::load(src, &mut unit);
                let mut ws = Workspace::default();
                let key = StreamKey::new(42, 3 + j as u64);
                c.apply(&mut unit, &key, pos as u64, &mut ws).unwrap();
                let mut want = vec![0u8; 16];
                unit_to_u8(&unit, &mut want);
                assert_eq!(want, got, "{name} episode {j} item {pos}");
            }
        }
    }
    let wrong = Corruption::new("rotate", 1, "dark", [1, 3, 3]).unwrap();
    assert!(clean.with_corruption(wrong, Target::Query).is_err());
}

/// Episodes `start..start + count` with outputs of type `T` through `table`.
fn run_as<T: Pixel>(
    s: &EpisodeSampler,
    images: &[u8],
    table: &PixelTable,
    start: u64,
    count: usize,
) -> (Vec<T>, Vec<T>) {
    let (w, k, q, d) = (s.ways, s.shots, s.queries, s.item_size);
    let mut sx = vec![T::default(); count * w * k * d];
    let mut qx = vec![T::default(); count * w * q * d];
    let out = BatchOut {
        support_x: &mut sx,
        support_y: &mut vec![0; count * w * k],
        query_x: &mut qx,
        query_y: &mut vec![0; count * w * q],
        classes: &mut vec![0; count * w],
    };
    s.sample_into(images, table, start, count, out).unwrap();
    (sx, qx)
}

#[test]
fn cached_corruptions_give_the_computed_bits() {
    let mut compact = Vec::new();
    for glyphs in [false, true] {
        compact.extend(check_cache(glyphs));
    }
    // Both layouts were read back: noisy images keep float rows, glyph-like ones
    // (white stays 1.0) mostly become bytes.
    assert!(compact.iter().any(|&(c, _)| !c), "{compact:?}");
    assert!(
        compact.iter().any(|&(c, glyphs)| c && glyphs),
        "{compact:?}"
    );
}

/// Checks every cached corruption against the computed one, on noisy images or on
/// glyph-like ones (dark noisy strokes on white); returns, per float cache built,
/// whether its rows were compact and whether the images were glyph-like.
fn check_cache(glyphs: bool) -> Vec<(bool, bool)> {
    let mut layouts = Vec::new();
    let (n_classes, per, side) = (9, 6, if glyphs { 12 } else { 7 });
    let d = side * side;
    let labels: Vec<i64> = (0..n_classes * per)
        .map(|i| (i % n_classes) as i64)
        .collect();
    let images = cache_test_images(glyphs, labels.len(), side);
    let base = EpisodeSampler::new(&labels, d, 3, 2, 2, 11, Some(&[0, 2, 3, 5, 8])).unwrap();
    let tables = [
        PixelTable::new(1, d, &[], &[]).unwrap(),
        PixelTable::new(1, d, &[0.25], &[0.5]).unwrap(),
    ];
    let n_rows = 5 * per; // eligible images
    for name in [
        "gaussian_blur",
        "thicken",
        "thin",
        "contrast",
        "rotate",
        "shear",
    ] {
        for target in [Target::Query, Target::Both] {
            let c = Corruption::new(name, 4, "dark", [1, side, side]).unwrap();
            let variants = c.variants().unwrap();
            let plain = base.clone().with_cache_budget(0);
            let plain = plain.with_corruption(c.clone(), target).unwrap();
            let cached = base.clone().with_corruption(c, target).unwrap();
            // Each fill corrupts 6 (queries) or 12 (both) items.
            let fills_to_build =
                (n_rows * variants).div_ceil(if target.support() { 12 } else { 6 });
            let want_u8 = run_as::<u8>(&plain, &images, &tables[0], 0, 40);
            for e in 0..40 {
                let got = run_as::<u8>(&cached, &images, &tables[0], e as u64, 1);
                let per_ep = |v: &[u8], n| v[e * n * d..(e + 1) * n * d].to_vec();
                assert_eq!(got.0, per_ep(&want_u8.0, 6), "{name} {target:?} ep {e}");
                assert_eq!(got.1, per_ep(&want_u8.1, 6), "{name} {target:?} ep {e}");
                assert_eq!(
                    cached.cache_built::<u8>(),
                    e + 1 >= fills_to_build,
                    "{name}"
                );
            }
            assert!(!plain.cache_built::<u8>() && !cached.cache_built::<f32>());
            for table in &tables {
                let want = run_as::<f32>(&plain, &images, table, 7, 30);
                // One fill big enough to build the float cache at once.
                let got = run_as::<f32>(&cached, &images, table, 7, 30);
                assert_eq!(cached.cache_built::<f32>(), name != "contrast", "{name}");
                if let Some(rows) = cached.cache.f32_rows.get() {
                    layouts.push((rows.is_compact(), glyphs));
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.0), bits(&want.0), "{name} {target:?}");
                assert_eq!(bits(&got.1), bits(&want.1), "{name} {target:?}");
            }
            // Other images (another address) are computed, not read from the cache.
            let other: Vec<u8> = images.iter().map(|v| 255 - v).collect();
            let want = run_as::<u8>(&plain, &other, &tables[0], 0, 4);
            assert_eq!(run_as::<u8>(&cached, &other, &tables[0], 0, 4), want);
        }
    }
    // Too large for the budget, or without a finite set of results: never cached.
    let c = Corruption::new("rotate", 1, "dark", [1, side, side]).unwrap();
    let small = base.clone().with_cache_budget(2 * n_rows * d - 1);
    let small = small.with_corruption(c, Target::Both).unwrap();
    let c = Corruption::new("gaussian_noise", 1, "dark", [1, side, side]).unwrap();
    let noise = base.clone().with_corruption(c, Target::Both).unwrap();
    for s in [small, noise] {
        run_as::<u8>(&s, &images, &tables[0], 0, 100);
        assert!(!s.cache_built::<u8>());
    }
    layouts
}

/// `n` images of `side x side` bytes for [`check_cache`]: a noisy stroke on noise, or (glyph-
/// like) a dark noisy stroke on white.
fn cache_test_images(glyphs: bool, n: usize, side: usize) -> Vec<u8> {
    let d = side * side;
    let mut rng = episode_rng(5, 0);
    (0..n * d)
        .map(|p| {
            let (y, x) = ((p % d) / side, p % side);
            let stroke = (2..5).contains(&y) && (1..4).contains(&x);
            let noise = rand::Rng::random_range(&mut rng, 0..56u32) as u8;
            match (glyphs, stroke) {
                (false, true) => 200 + noise,
                (false, false) => noise,
                (true, true) => noise,
                (true, false) => 255,
            }
        })
        .collect()
}

#[test]
fn concurrent_fills_agree_while_the_cache_builds() {
    let (images, labels) = toy(12, 7, 16);
    let c = Corruption::new("rotate", 3, "dark", [1, 4, 4]).unwrap();
    let base = EpisodeSampler::new(&labels, 16, 5, 2, 3, 42, None).unwrap();
    let plain = base.clone().with_cache_budget(0);
    let plain = plain.with_corruption(c.clone(), Target::Both).unwrap();
    let cached = base.with_corruption(c, Target::Both).unwrap();
    let want = run(&plain, &images, 0, 50);
    // A build held elsewhere (or by a thread that a fork left behind): compute, no wait.
    let held = cached.cache.building.lock().unwrap();
    let computed = run(&cached, &images, 0, 50);
    assert!(!cached.cache_built::<u8>());
    assert_eq!((&computed.0, &computed.2), (&want.0, &want.2));
    drop(held);
    // Each fill is big enough to build the cache: one builds, the others compute.
    let got: Vec<Outputs> = std::thread::scope(|scope| {
        let fills: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| run(&cached, &images, 0, 50)))
            .collect();
        fills.into_iter().map(|f| f.join().unwrap()).collect()
    });
    assert!(cached.cache_built::<u8>());
    for g in got.into_iter().chain([run(&cached, &images, 0, 50)]) {
        assert_eq!((g.0, g.2), (want.0.clone(), want.2.clone()));
    }
}

#[test]
fn bad_sizes_are_errors() {
    let (_, labels) = toy(4, 3, 1);
    assert!(EpisodeSampler::new(&labels, 1, 5, 1, 1, 0, None)
        .unwrap_err()
        .to_string()
        .contains("ways"));
    let e = EpisodeSampler::new(&labels, 1, 2, 2, 2, 0, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("smallest class"), "{e}");
    assert!(EpisodeSampler::new(&labels, 1, 2, 0, 1, 0, None).is_err());
    assert!(EpisodeSampler::new(&[-1, 0], 1, 1, 1, 0, 0, None).is_err());
    assert!(EpisodeSampler::new(&labels, usize::MAX / 2, 2, 1, 1, 0, None).is_err());
    assert!(EpisodeSampler::new(&labels, 1, 1, 1, 0, 0, Some(&[7])).is_err());
}

#[test]
fn counts_whose_sizes_overflow_are_errors() {
    let (images, labels) = toy(4, 3, 4);
    let table = PixelTable::new(1, 4, &[], &[]).unwrap();
    for queries in [0, 1] {
        let s = EpisodeSampler::new(&labels, 4, 2, 1, queries, 0, None).unwrap();
        let empty = || BatchOut::<u8> {
            support_x: &mut [],
            support_y: &mut [],
            query_x: &mut [],
            query_y: &mut [],
            classes: &mut [],
        };
        // 2^62 * 2 ways * 1 shot * 4 bytes wraps to 0 without checked arithmetic.
        let err = s
            .sample_into(&images, &table, 0, 1 << 62, empty())
            .unwrap_err();
        assert!(err.to_string().starts_with("count: "), "{err}");
    }
}

type FeatureOutputs = (Vec<f32>, Vec<i64>, Vec<f32>, Vec<i64>, Vec<i64>);

fn run_features(s: &EpisodeSampler, features: &[f32], start: u64, count: usize) -> FeatureOutputs {
    let (w, k, q, d) = (s.ways, s.shots, s.queries, s.item_size);
    let mut out = (
        vec![0f32; count * w * k * d],
        vec![0i64; count * w * k],
        vec![0f32; count * w * q * d],
        vec![0i64; count * w * q],
        vec![0i64; count * w],
    );
    s.sample_features_into(
        features,
        start,
        count,
        BatchOut {
            support_x: &mut out.0,
            support_y: &mut out.1,
            query_x: &mut out.2,
            query_y: &mut out.3,
            classes: &mut out.4,
        },
    )
    .unwrap();
    out
}

#[test]
fn feature_episodes_pick_the_image_sampler_items() {
    // item i: image bytes all i, feature row [i, i + 0.5]
    let (n_classes, per) = (12, 9);
    let n = n_classes * per;
    let labels: Vec<i64> = (0..n).map(|i| (i % n_classes) as i64).collect();
    let images: Vec<u8> = (0..n as u8).collect();
    let features: Vec<f32> = (0..n).flat_map(|i| [i as f32, i as f32 + 0.5]).collect();
    for q in [0, 3] {
        let img = EpisodeSampler::new(&labels, 1, 5, 2, q, 7, None).unwrap();
        let feat = EpisodeSampler::new(&labels, 2, 5, 2, q, 7, None).unwrap();
        let a = run(&img, &images, 3, 40);
        let b = run_features(&feat, &features, 3, 40);
        let rows = |x: &[f32]| -> Vec<u8> {
            x.chunks(2)
                .map(|r| {
                    assert_eq!(r[1], r[0] + 0.5);
                    r[0] as u8
                })
                .collect()
        };
        assert_eq!(rows(&b.0), a.0);
        assert_eq!(rows(&b.2), a.2);
        assert_eq!((&b.1, &b.3, &b.4), (&a.1, &a.3, &a.4));
        // split independence
        let c = run_features(&feat, &features, 3, 17);
        let d = run_features(&feat, &features, 20, 23);
        assert_eq!([c.0, d.0].concat(), b.0);
    }
}

#[test]
fn feature_checks_name_the_problem() {
    assert!(check_features(&[1.0, 2.0], 2).is_ok());
    let err = check_features(&[1.0, 2.0, f32::NAN, 0.0], 2).unwrap_err();
    assert!(
        format!("{err}").contains("item 1, dimension 0 is NaN"),
        "{err}"
    );
    assert!(check_features(&[f32::INFINITY], 1).is_err());
    assert!(check_features(&[], 0).is_err());
    let labels = [0i64, 1, 0, 1];
    let s = EpisodeSampler::new(&labels, 3, 2, 1, 1, 0, None).unwrap();
    let mut o = (
        vec![0f32; 6],
        vec![0i64; 2],
        vec![0f32; 6],
        vec![0i64; 2],
        vec![0i64; 2],
    );
    let out = BatchOut {
        support_x: &mut o.0,
        support_y: &mut o.1,
        query_x: &mut o.2,
        query_y: &mut o.3,
        classes: &mut o.4,
    };
    // 11 values, not 4 items of 3
    assert!(s.sample_features_into(&[0.0; 11], 0, 1, out).is_err());
}
