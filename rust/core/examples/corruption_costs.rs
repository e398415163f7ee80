//! Time per image of each corruption at severity 3 on 28x28 glyph-like images, one thread:
//! `cargo run --release -p metarobust-core --example corruption_costs [NAMES...]`.
//! (The sampler-level ratios against clean sampling: `benches/compare.py corruptions`.)

use metarobust_core::corruptions::{Corruption, StreamKey, Workspace, NAMES};
use std::time::Instant;

fn main() {
    let (n, d) = (500usize, 784usize);
    // Sparse dark strokes on white, like Omniglot: about one pixel in five is ink.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let images: Vec<f32> = (0..n * d)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 5 == 0 {
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
}
