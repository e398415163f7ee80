//! Bilinear resampling of planes at arbitrary source points (the elastic warp), through a
//! padded copy of the plane so that every read is inside: AVX2 gathers where available,
//! checked scalar code for images too large for 32-bit indices.

use super::{grown, Workspace};
use crate::pixel::clamp;

/// Border of the padded image the bilinear warps read: two pixels, and coordinates clamped
/// to `[-1, side]`, keep every read inside.
pub(super) const WARP_PAD: usize = 2;

pub(super) fn padded_pitch(w: usize) -> usize {
    w + 2 * WARP_PAD
}

pub(super) fn padded_len(h: usize, w: usize) -> usize {
    padded_pitch(w).saturating_mul(h + 2 * WARP_PAD)
}

/// Where `(x, y)` samples the padded image (pitch `pw`): its top-left neighbour and the
/// weights of the right and lower neighbours.
#[inline(always)]
pub(super) fn sample_point(x: f32, y: f32, h: usize, w: usize, pw: usize) -> (f32, f32, u32) {
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
pub(super) fn warp<const AVX2: bool>(
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
pub(super) fn warp_planes<const AVX2: bool>(
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
pub(super) fn warp_huge(img: &mut [f32], h: usize, w: usize, background: f32, ws: &mut Workspace) {
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
