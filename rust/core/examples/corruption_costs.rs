//! Time per image of each corruption at severity 3 on 28x28 glyph-like images, one thread,
//! on floats, then on bytes for those that work on bytes:
//! `cargo run --release -p metarobust-core --example corruption_costs [NAMES...]`.
//! (The sampler-level ratios against clean sampling: `benches/compare.py corruptions`.)

use metarobust_core::corruptions::{Corruption, StreamKey, Workspace, NAMES};
use std::time::Instant;

/// Corrupts item `i` of a batch from the first bytes into the second.
type ByteCorruption<'a> = dyn FnMut(usize, &[u8], &mut [u8]) + 'a;

fn main() {
    let (n, d) = (500usize, 784usize);
    // Sparse dark strokes on white, like Omniglot: about one pixel in five is ink.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let images: Vec<f32> = (0..n * d)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(5) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let only: Vec<String> = std::env::args().skip(1).collect();
    let key = StreamKey::new(0, 0);
    let mut ws = Workspace::default();
    let mut img = vec![0f32; d];
    println!("corruption       ns/image (best of 15 rounds of {n})");
    for name in NAMES {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let c = Corruption::new(name, 3, "dark", [1, 28, 28]).expect("valid corruption");
        let mut best = f64::MAX;
        for _ in 0..15 {
            let t = Instant::now();
            for (i, src) in images.chunks(d).enumerate() {
                img.copy_from_slice(src);
                c.apply(&mut img, &key, i as u64, &mut ws)
                    .expect("right size");
                std::hint::black_box(&mut img);
            }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        println!("{name:16} {best:8.0}");
    }
    // Byte images to bytes, where a corruption works on bytes (the sampler's uint8 path),
    // against a plain copy of the image.
    let bytes: Vec<u8> = images.iter().map(|&v| (v * 255.0) as u8).collect();
    let time = |f: &mut ByteCorruption| {
        let mut out = vec![0u8; d];
        let mut best = f64::MAX;
        for _ in 0..15 {
            let t = Instant::now();
            for (i, src) in bytes.chunks(d).enumerate() {
                f(i, src, &mut out);
                std::hint::black_box(&mut out);
            }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        best
    };
    println!("\nbytes to bytes   ns/image");
    let copy = time(&mut |_, src, dst| dst.copy_from_slice(src));
    println!("{:16} {copy:8.0}", "(copy)");
    for name in NAMES {
        let c = Corruption::new(name, 3, "dark", [1, 28, 28]).expect("valid corruption");
        if (only.is_empty() || only.iter().any(|o| o == name))
            && c.apply_bytes(&bytes[..d], &mut vec![0u8; d], &key, 0)
        {
            let best = time(&mut |i, src, dst| {
                c.apply_bytes(src, dst, &key, i as u64);
            });
            println!("{name:16} {best:8.0}");
        }
    }
}
