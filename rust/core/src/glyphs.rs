//! The embedded default dataset: procedural, Omniglot-like handwritten glyphs.
//!
//! A *class* is a seeded set of 1 to 4 pen strokes, each a cubic Bezier curve (long strokes,
//! short hooks and dots), some starting on an earlier stroke the way handwritten characters
//! join up. An *instance* is its class's strokes with jittered control points, a random affine
//! map (rotation, scale, aspect, shear, shift) and its own pen width, rendered anti-aliased
//! as dark ink (towards 0) on a light background (255), like Omniglot, into `uint8` pixels.
//!
//! Randomness is counter-based: the class geometry comes from ChaCha8 keyed by
//! `(seed, class, CLASS_TAG)`, and instance `i` from ChaCha8 keyed by
//! `(seed, class, INSTANCE_TAG)` on stream `i`. Rendering class `c` instance `i` therefore
//! never depends on which other classes or instances are rendered, in what batch, or on how
//! many threads do it. The geometry lives in a size-free unit square, so the same
//! `(seed, class, instance)` gives the same glyph at every image size.
//!
//! Splits use disjoint class-id ranges (see [`Split`]): train classes are ids
//! `0 .. 2^32`, validation `2^32 .. 2^33`, test `2^33 .. 2^33 + 2^32`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{checked_product, value_err, Result};
use crate::pool;

/// Smallest accepted image side, in pixels.
pub const MIN_SIZE: usize = 8;
/// Largest accepted image side, in pixels.
pub const MAX_SIZE: usize = 512;
/// Default image side (Omniglot's usual downsampled size).
pub const DEFAULT_SIZE: usize = 28;
/// Width of each split's class-id range; a split holds at most this many classes.
pub const SPLIT_STRIDE: u64 = 1 << 32;

/// Disjoint class-id ranges for dataset splits.
///
/// Class `k` of a split (`0 <= k < SPLIT_STRIDE`) has id `split.offset() + k`; the ranges
/// `[0, 2^32)`, `[2^32, 2^33)` and `[2^33, 2^33 + 2^32)` never overlap, so train, validation
/// and test glyphs are different classes for any number of classes per split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    /// The first class id of the split: 0, `2^32` or `2^33`.
    pub const fn offset(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Val => SPLIT_STRIDE,
            Split::Test => 2 * SPLIT_STRIDE,
        }
    }

    /// Parses `"train"`, `"val"` or `"test"`.
    pub fn from_name(name: &str) -> Result<Split> {
        match name {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => value_err(format!(
                "split: expected \"train\", \"val\" or \"test\", got {other:?}"
            )),
        }
    }

    /// The class ids `offset .. offset + num_classes` of the split's first `num_classes`
    /// classes; errors when `num_classes` exceeds [`SPLIT_STRIDE`].
    pub fn class_ids(self, num_classes: usize) -> Result<Vec<u64>> {
        if num_classes as u64 > SPLIT_STRIDE {
            return value_err(format!(
                "num_classes: at most {SPLIT_STRIDE} classes per split, got {num_classes}"
            ));
        }
        Ok((0..num_classes as u64).map(|k| self.offset() + k).collect())
    }
}

/// Checks the arguments of [`render`] and returns the number of output bytes,
/// `n_classes * per_class * size * size`.
pub fn output_len(n_classes: usize, per_class: usize, size: usize) -> Result<usize> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return value_err(format!(
            "image_size: must be between {MIN_SIZE} and {MAX_SIZE}, got {size}"
        ));
    }
    if per_class == 0 {
        return value_err("per_class: must be >= 1, got 0");
    }
    // The classes are given (an array); the images per class are what makes the output large.
    checked_product(&[n_classes, per_class, size, size], "per_class")
}

/// Renders `per_class` instances of each class in `classes` at `size x size` pixels into
/// `out`, laid out `(classes.len() * per_class, size, size)` in class-major order: image
/// `j * per_class + i` is instance `i` of class `classes[j]`. Runs in parallel in the
/// process's pool; the result does not depend on the thread count or the batch split.
pub fn render(
    seed: u64,
    classes: &[u64],
    per_class: usize,
    size: usize,
    out: &mut [u8],
) -> Result<()> {
    let need = output_len(classes.len(), per_class, size)?;
    if out.len() != need {
        return value_err(format!(
            "out: expected {need} bytes ({} classes x {per_class} per class x {size} x {size}), \
             got {}",
            classes.len(),
            out.len()
        ));
    }
    if need == 0 {
        return Ok(());
    }
    pool::install(|| render_parallel(seed, classes, per_class, size, out));
    Ok(())
}

/// The parallel body of [`render`], run in whatever rayon pool is current.
fn render_parallel(seed: u64, classes: &[u64], per_class: usize, size: usize, out: &mut [u8]) {
    let image = size * size;
    out.par_chunks_mut(per_class * image)
        .zip(classes.par_iter())
        .for_each(|(block, &class)| {
            let glyph = ClassGlyph::new(seed, class);
            block
                .par_chunks_mut(image)
                .with_min_len(16)
                .enumerate()
                .for_each(|(i, img)| glyph.render_instance(seed, class, i as u64, size, img));
        });
}

/// Renders one image: instance `instance` of class `class`, `size * size` bytes into `out`.
pub fn render_one(seed: u64, class: u64, instance: u64, size: usize, out: &mut [u8]) -> Result<()> {
    let need = output_len(1, 1, size)?;
    if out.len() != need {
        return value_err(format!("out: expected {need} bytes, got {}", out.len()));
    }
    ClassGlyph::new(seed, class).render_instance(seed, class, instance, size, out);
    Ok(())
}

const CLASS_TAG: u64 = 0x676c_7970_6863_6c73; // "glyphcls"
const INSTANCE_TAG: u64 = 0x676c_7970_6869_6e73; // "glyphins"

/// ChaCha8 keyed by `(seed, class, tag)` on stream `stream`: a different key for every
/// triple, so class and instance generators never share a stream.
fn keyed_rng(seed: u64, class: u64, tag: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&class.to_le_bytes());
    key[16..24].copy_from_slice(&tag.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct P {
    x: f32,
    y: f32,
}

impl P {
    const fn new(x: f32, y: f32) -> P {
        P { x, y }
    }
    fn add(self, o: P) -> P {
        P::new(self.x + o.x, self.y + o.y)
    }
    fn sub(self, o: P) -> P {
        P::new(self.x - o.x, self.y - o.y)
    }
    fn scale(self, s: f32) -> P {
        P::new(self.x * s, self.y * s)
    }
    fn len(self) -> f32 {
        (self.x * self.x + self.y * self.y).sqrt()
    }
    fn lerp(self, o: P, t: f32) -> P {
        self.add(o.sub(self).scale(t))
    }
}

fn bezier(c: &[P; 4], t: f32) -> P {
    let u = 1.0 - t;
    let (a, b, cc, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    P::new(
        a * c[0].x + b * c[1].x + cc * c[2].x + d * c[3].x,
        a * c[0].y + b * c[1].y + cc * c[2].y + d * c[3].y,
    )
}

/// Uniform in `[-a, a]`.
fn sym(rng: &mut ChaCha8Rng, a: f32) -> f32 {
    (rng.random::<f32>() * 2.0 - 1.0) * a
}

/// Uniform in `[lo, hi)`.
fn unif(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + rng.random::<f32>() * (hi - lo)
}

const MAX_STROKES: usize = 4;
/// Class pen width range, in frame units (the frame's [-1, 1] spans 80% of the image).
const WIDTH: (f32, f32) = (0.11, 0.18);
/// Per-instance variation: control-point jitter, whole-stroke shift (frame units),
/// rotation (radians), scale range, aspect range, shear, shift, pen-width factor range.
const JITTER: f32 = 0.1;
const STROKE_SHIFT: f32 = 0.06;
const ROTATION: f32 = 0.3;
const SCALE: (f32, f32) = (0.82, 1.08);
const ASPECT: (f32, f32) = (0.9, 1.1);
const SHEAR: f32 = 0.2;
const SHIFT: f32 = 0.12;
const PEN: (f32, f32) = (0.75, 1.3);

/// A class: up to four cubic Bezier strokes in the unit frame (roughly `[-0.85, 0.85]^2`)
/// and its base pen width in the same units.
#[derive(Debug, Clone)]
struct ClassGlyph {
    strokes: [[P; 4]; MAX_STROKES],
    n: usize,
    width: f32,
}

impl ClassGlyph {
    fn new(seed: u64, class: u64) -> ClassGlyph {
        let mut rng = keyed_rng(seed, class, CLASS_TAG, 0);
        let n = match rng.random::<f32>() {
            u if u < 0.10 => 1,
            u if u < 0.40 => 2,
            u if u < 0.75 => 3,
            _ => 4,
        };
        let mut strokes = [[P::new(0.0, 0.0); 4]; MAX_STROKES];
        for s in 0..n {
            // The first stroke is always a long one; later ones may be hooks or dots.
            let kind = if s == 0 { 0.0 } else { rng.random::<f32>() };
            let start = if s > 0 && rng.random::<f32>() < 0.6 {
                // Join an earlier stroke at an end or along it.
                let prev = &strokes[rng.random_range(0..s)];
                let t = match rng.random_range(0..3) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => rng.random::<f32>(),
                };
                bezier(prev, t)
            } else {
                P::new(sym(&mut rng, 0.7), sym(&mut rng, 0.7))
            };
            let angle = rng.random::<f32>() * std::f32::consts::TAU;
            let (length, bend) = if kind < 0.75 {
                // Long stroke: a line, arc, S-curve or, with far-out controls, a loop.
                let bend = if rng.random::<f32>() < 0.15 { 1.4 } else { 0.6 };
                (unif(&mut rng, 0.8, 1.8), bend)
            } else if kind < 0.93 {
                (unif(&mut rng, 0.3, 0.6), 0.6) // short hook
            } else {
                (unif(&mut rng, 0.05, 0.1), 0.2) // dot
            };
            let dir = P::new(angle.cos(), angle.sin());
            let normal = P::new(-dir.y, dir.x);
            let end = start.add(dir.scale(length));
            let c1 = start
                .lerp(end, 1.0 / 3.0)
                .add(normal.scale(sym(&mut rng, bend) * length))
                .add(dir.scale(sym(&mut rng, 0.3) * length));
            let c2 = start
                .lerp(end, 2.0 / 3.0)
                .add(normal.scale(sym(&mut rng, bend) * length))
                .add(dir.scale(sym(&mut rng, 0.3) * length));
            strokes[s] = [start, c1, c2, end];
        }
        // Centre the glyph and scale its curve extent to a seeded size in the frame.
        let (mut lo, mut hi) = (P::new(f32::MAX, f32::MAX), P::new(f32::MIN, f32::MIN));
        for stroke in &strokes[..n] {
            for k in 0..=16 {
                let p = bezier(stroke, k as f32 / 16.0);
                lo = P::new(lo.x.min(p.x), lo.y.min(p.y));
                hi = P::new(hi.x.max(p.x), hi.y.max(p.y));
            }
        }
        // Each axis gets at least 35% of the longer one, so no glyph is a flat line.
        let centre = lo.lerp(hi, 0.5);
        let (ex, ey) = (
            ((hi.x - lo.x) * 0.5).max(1e-3),
            ((hi.y - lo.y) * 0.5).max(1e-3),
        );
        let major = ex.max(ey);
        let target = unif(&mut rng, 0.65, 0.85) / major;
        let (kx, ky) = (
            target * (0.35 * major / ex).max(1.0),
            target * (0.35 * major / ey).max(1.0),
        );
        for stroke in &mut strokes[..n] {
            for p in stroke.iter_mut() {
                let d = p.sub(centre);
                *p = P::new(d.x * kx, d.y * ky);
            }
        }
        let width = unif(&mut rng, WIDTH.0, WIDTH.1);
        ClassGlyph { strokes, n, width }
    }

    /// Renders instance `instance` into `img` (`size * size` bytes, overwritten).
    fn render_instance(&self, seed: u64, class: u64, instance: u64, size: usize, img: &mut [u8]) {
        let mut rng = keyed_rng(seed, class, INSTANCE_TAG, instance);
        // Affine map of the unit frame: rotation, scale with aspect, shear, shift.
        let theta = sym(&mut rng, ROTATION);
        let scale = unif(&mut rng, SCALE.0, SCALE.1);
        let aspect = unif(&mut rng, ASPECT.0, ASPECT.1);
        let (sx, sy) = (scale * aspect, scale / aspect);
        let shear = sym(&mut rng, SHEAR);
        let (shift_x, shift_y) = (sym(&mut rng, SHIFT), sym(&mut rng, SHIFT));
        let (cos, sin) = (theta.cos(), theta.sin());
        // Linear part R(theta) * [[sx, shear * sx], [0, sy]].
        let m = [
            cos * sx,
            cos * shear * sx - sin * sy,
            sin * sx,
            sin * shear * sx + cos * sy,
        ];
        // Unit frame to pixels: the frame's [-1, 1] spans 80% of the image.
        let half = size as f32 * 0.5;
        let px = size as f32 * 0.4;
        let to_pixels = |p: P| {
            let x = m[0] * p.x + m[1] * p.y + shift_x;
            let y = m[2] * p.x + m[3] * p.y + shift_y;
            P::new(half + x * px, half + y * px)
        };
        let width_px = (self.width * unif(&mut rng, PEN.0, PEN.1) * scale * px).max(1.2);

        img.fill(255);
        for stroke in &self.strokes[..self.n] {
            // Whole-stroke displacement plus per-point jitter: a different hand each time.
            let shift = P::new(sym(&mut rng, STROKE_SHIFT), sym(&mut rng, STROKE_SHIFT));
            let mut c = [P::new(0.0, 0.0); 4];
            for (dst, src) in c.iter_mut().zip(stroke) {
                let j = P::new(sym(&mut rng, JITTER), sym(&mut rng, JITTER));
                *dst = to_pixels(src.add(shift).add(j));
            }
            draw_bezier(&c, width_px, size, img);
        }
    }
}

/// Flattens a cubic Bezier (pixel coordinates) into segments and draws them. The segment
/// count follows Wang's formula for a flattening error of at most [`FLATNESS`] pixels.
fn draw_bezier(c: &[P; 4], width: f32, size: usize, img: &mut [u8]) {
    let d1 = c[0].sub(c[1].scale(2.0)).add(c[2]).len();
    let d2 = c[1].sub(c[2].scale(2.0)).add(c[3]).len();
    let n = ((0.75 * d1.max(d2) / FLATNESS).sqrt().ceil() as usize).clamp(1, 128);
    let mut a = c[0];
    for k in 1..=n {
        let b = if k == n {
            c[3]
        } else {
            bezier(c, k as f32 / n as f32)
        };
        draw_segment(a, b, width, size, img);
        a = b;
    }
}

/// `ceil(v)` for `v` clamped to `[0, 1e9]`, as an index (NaN gives 0).
fn ceil_index(v: f32) -> usize {
    let v = v.clamp(0.0, 1e9);
    let t = v as u32; // truncates towards zero
    (t + u32::from((t as f32) < v)) as usize
}

/// Largest distance, in pixels, between a flattened stroke and its true curve.
const FLATNESS: f32 = 0.15;

/// Draws a round-capped segment of pen width `width` (pixels), anti-aliased:
/// coverage = clamp(width / 2 - distance + 0.5, 0, 1) at each pixel centre, combined with
/// what is already there by taking the darker value. Each row visits only the pixels of the
/// segment's bounding box that lie in the band around the segment's line.
fn draw_segment(a: P, b: P, width: f32, size: usize, img: &mut [u8]) {
    let reach = width * 0.5 + 0.5;
    let bx0 = (a.x.min(b.x) - reach).max(0.0);
    let bx1 = (a.x.max(b.x) + reach).min(size as f32);
    let by0 = (a.y.min(b.y) - reach).max(0.0);
    let by1 = (a.y.max(b.y) + reach).min(size as f32);
    if bx0 >= bx1 || by0 >= by1 {
        return;
    }
    // Pixel centres x + 0.5 in [lo, hi] are x in [ceil(lo - 0.5), floor(hi - 0.5)].
    // (Integer rounding instead of f32::ceil/floor, which are library calls on baseline x86-64.)
    let first = |lo: f32| ceil_index(lo - 0.5);
    let last = |hi: f32| ceil_index(hi - 0.5).min(size);
    let ab = b.sub(a);
    let len2 = ab.x * ab.x + ab.y * ab.y;
    let inv = if len2 > 1e-12 { 1.0 / len2 } else { 0.0 };
    let reach2 = reach * reach;
    // The band |perpendicular distance| <= reach crosses row y over a span of half-width
    // `band` around `a.x + (y - a.y) * slope`; near-horizontal segments use the box alone.
    let steep = ab.y.abs() * 8.0 > ab.x.abs();
    let (slope, band) = if steep {
        (ab.x / ab.y, reach * len2.sqrt() / ab.y.abs())
    } else {
        (0.0, f32::INFINITY)
    };
    for y in first(by0)..last(by1) {
        let cy = y as f32 + 0.5 - a.y;
        let (mut lo, mut hi) = (bx0, bx1);
        if steep {
            let centre = a.x + cy * slope;
            lo = lo.max(centre - band);
            hi = hi.min(centre + band);
        }
        let (x0, x1) = (first(lo), last(hi));
        if x0 >= x1 {
            continue;
        }
        let row = &mut img[y * size + x0..y * size + x1];
        let mut cx = x0 as f32 + 0.5 - a.x;
        for pixel in row {
            let t = ((cx * ab.x + cy * ab.y) * inv).clamp(0.0, 1.0);
            let (dx, dy) = (cx - t * ab.x, cy - t * ab.y);
            let d2 = (dx * dx + dy * dy).min(reach2);
            let coverage = (reach - d2.sqrt()).min(1.0);
            let value = (255.5 - coverage * 255.0) as u8;
            *pixel = (*pixel).min(value);
            cx += 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(seed: u64, classes: &[u64], per: usize, size: usize) -> Vec<u8> {
        let mut out = vec![0u8; classes.len() * per * size * size];
        render(seed, classes, per, size, &mut out).unwrap();
        out
    }

    #[test]
    fn glyphs_are_deterministic() {
        let a = images(7, &[0, 1, 2, 99], 5, 28);
        let b = images(7, &[0, 1, 2, 99], 5, 28);
        assert_eq!(a, b);
        let c = images(8, &[0, 1, 2, 99], 5, 28);
        assert_ne!(a, c, "another seed gives other glyphs");
        let mut one = vec![0u8; 28 * 28];
        render_one(7, 99, 4, 28, &mut one).unwrap();
        assert_eq!(&a[(3 * 5 + 4) * 784..(3 * 5 + 5) * 784], &one[..]);
    }

    #[test]
    fn glyphs_are_independent_of_batch_split() {
        let per = 6;
        let both = images(3, &[3, 4], per, 28);
        let alone = images(3, &[4], per, 28);
        assert_eq!(&both[per * 784..], &alone[..]);
        // Fewer instances give a prefix of the same instances.
        let few = images(3, &[4], 2, 28);
        assert_eq!(&alone[..2 * 784], &few[..]);
        // Split ids are ordinary classes too.
        let val = images(3, &[Split::Val.offset() + 4], per, 28);
        let val_again = images(3, &[9, Split::Val.offset() + 4], per, 28);
        assert_eq!(&val[..], &val_again[per * 784..]);
    }

    #[test]
    fn glyphs_are_independent_of_thread_count() {
        let classes: Vec<u64> = (0..40).collect();
        let (per, size) = (9, 28);
        let mut reference = vec![0u8; classes.len() * per * size * size];
        for (k, img) in reference.chunks_mut(size * size).enumerate() {
            render_one(5, classes[k / per], (k % per) as u64, size, img).unwrap();
        }
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0u8; reference.len()];
            pool.install(|| render_parallel(5, &classes, per, size, &mut out));
            assert_eq!(out, reference, "{threads} threads");
        }
    }

    #[test]
    fn glyphs_value_range_and_polarity() {
        for size in [8, 28, 64, 105] {
            let out = images(1, &[0, 1, 2, 3, 4, 5], 4, size);
            for img in out.chunks(size * size) {
                let min = *img.iter().min().unwrap();
                let ink = img.iter().filter(|&&v| v < 128).count();
                let background = img.iter().filter(|&&v| v == 255).count();
                assert!(min < 64, "size {size}: some dark ink (min {min})");
                assert!(
                    ink > 0 && ink < img.len() / 2,
                    "size {size}: ink {ink} pixels"
                );
                assert!(background > img.len() / 2, "size {size}: mostly background");
            }
            // Anti-aliased: some grey edge pixels between ink and background.
            assert!(
                out.iter().any(|&v| v > 32 && v < 224),
                "size {size}: grey edges"
            );
        }
        // Corners stay background (the glyph is centred with a margin).
        let out = images(2, &(0..50).collect::<Vec<_>>(), 4, 28);
        for img in out.chunks(784) {
            assert_eq!(img[0], 255);
            assert_eq!(img[783], 255);
        }
    }

    #[test]
    fn glyph_classes_differ_and_instances_vary() {
        let per = 4;
        let out = images(0, &(0..30).collect::<Vec<_>>(), per, 28);
        let img = |k: usize| &out[k * 784..(k + 1) * 784];
        let dist = |a: &[u8], b: &[u8]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                .sum::<f64>()
        };
        let (mut within, mut between, mut nw, mut nb) = (0.0, 0.0, 0, 0);
        for i in 0..30 * per {
            for j in i + 1..30 * per {
                let d = dist(img(i), img(j));
                if i / per == j / per {
                    assert!(d > 0.0, "instances {i} and {j} of one class are identical");
                    within += d;
                    nw += 1;
                } else {
                    assert!(
                        d > 0.0,
                        "images {i} and {j} of different classes are identical"
                    );
                    between += d;
                    nb += 1;
                }
            }
        }
        let (within, between) = (within / nw as f64, between / nb as f64);
        assert!(
            within < between,
            "within-class {within} vs between-class {between}"
        );
    }

    #[test]
    fn glyph_bad_arguments_error() {
        let mut out = vec![0u8; 7 * 7];
        assert!(render(0, &[0], 1, 7, &mut out).is_err());
        let mut out = vec![0u8; 513 * 513];
        assert!(render(0, &[0], 1, 513, &mut out).is_err());
        let mut out = vec![0u8; 28 * 28];
        assert!(render(0, &[0], 0, 28, &mut out).is_err());
        assert!(
            render(0, &[0, 1], 1, 28, &mut out).is_err(),
            "length mismatch"
        );
        assert!(output_len(usize::MAX / 2, 3, 28).is_err(), "overflow");
        assert!(render(0, &[], 1, 28, &mut []).is_ok());
        assert_eq!(Split::from_name("val").unwrap().offset(), 1 << 32);
        assert!(Split::from_name("validation").is_err());
        assert!(Split::Test.class_ids((SPLIT_STRIDE + 1) as usize).is_err());
        assert_eq!(
            Split::Test.class_ids(2).unwrap(),
            vec![1 << 33, (1 << 33) + 1]
        );
    }

    /// Raw-pixel 1-nearest-neighbour 5-way 1-shot accuracy and render speed, printed.
    /// `cargo test --release -p metarobust-core glyph_diagnostics -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn glyph_diagnostics() {
        let (n_classes, per, size) = (100usize, 20usize, 28usize);
        let classes: Vec<u64> = (0..n_classes as u64).collect();
        let mut out = vec![0u8; n_classes * per * size * size];
        let t = std::time::Instant::now();
        let reps = 20;
        for _ in 0..reps {
            render(0, &classes, per, size, &mut out).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!("{:.0} images/s", (reps * n_classes * per) as f64 / secs);
        let img = |k: usize| &out[k * 784..(k + 1) * 784];
        let mut rng = keyed_rng(1, 0, 0, 0);
        let (episodes, mut correct, mut total) = (400, 0, 0);
        for _ in 0..episodes {
            let chosen = rand::seq::index::sample(&mut rng, n_classes, 5).into_vec();
            let support: Vec<usize> = chosen
                .iter()
                .map(|&c| c * per + rng.random_range(0..per))
                .collect();
            for (way, &c) in chosen.iter().enumerate() {
                for _ in 0..3 {
                    let q = loop {
                        let q = c * per + rng.random_range(0..per);
                        if q != support[way] {
                            break q;
                        }
                    };
                    let best = (0..5)
                        .min_by_key(|&w| {
                            img(q)
                                .iter()
                                .zip(img(support[w]))
                                .map(|(&x, &y)| (x as i64 - y as i64).pow(2))
                                .sum::<i64>()
                        })
                        .unwrap();
                    correct += usize::from(best == way);
                    total += 1;
                }
            }
        }
        println!(
            "1-NN 5-way 1-shot accuracy {:.3}",
            correct as f64 / total as f64
        );
        if let Ok(path) = std::env::var("GLYPH_GRID") {
            // 12 classes x 10 instances as a PGM picture.
            let mut pgm = format!("P5 {} {} 255\n", 10 * size, 12 * size).into_bytes();
            for c in 0..12 {
                for y in 0..size {
                    for i in 0..10 {
                        pgm.extend_from_slice(&img(c * per + i)[y * size..(y + 1) * size]);
                    }
                }
            }
            std::fs::write(path, pgm).unwrap();
        }
    }
}
