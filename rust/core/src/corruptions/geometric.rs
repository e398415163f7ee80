//! `rotate` and `shear` (MNIST-C, random sign): row-wise linear resampling, the rotation as
//! Paeth's three shears with transposes between them.

use super::simd::lerp;
use super::{grown, Workspace};
use crate::pixel::clamp;

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

/// Shears every `h x w` plane of `img` by `k`: source `x = x + k (y - centre)`.
#[inline(always)]
pub(super) fn shear<const AVX2: bool>(
    img: &mut [f32],
    h: usize,
    w: usize,
    k: f32,
    background: f32,
    ws: &mut Workspace,
) {
    let plane = h * w;
    let cy = (h as f32 - 1.0) / 2.0;
    let Workspace { b, c, .. } = ws;
    for p in img.chunks_mut(plane) {
        let copy = grown(c, plane);
        copy.copy_from_slice(p);
        // Source x = x + k (y - centre).
        shift_rows::<AVX2>(copy, w, p, w, |y| k * (y as f32 - cy), background, b);
    }
}

/// Rotates one plane: `out(p) = in(centre + R(-theta) (p - centre))`, as Paeth's three
/// shears `R = Sx(a) Sy(b) Sx(a)`, `a = tan(theta / 2)`, `b = -sin(theta)`, each a
/// row-wise linear resampling. The intermediate images are widened so nothing is cut off.
#[inline(always)]
pub(super) fn rotate<const AVX2: bool>(
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
    use crate::corruptions::tests::{glyph, mad};
    use crate::corruptions::warp::warp;
    use crate::corruptions::{Corruption, StreamKey};

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
}
