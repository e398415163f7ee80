//! `gaussian_blur`: a separable Gaussian filter with the edges replicated (CIFAR-10-C's
//! 0.4-1 px, widened for 2 px strokes), and the padded layout that it and the morphology
//! work in.

use super::simd::axpy;
use super::{grown, Workspace};

pub(super) fn gaussian_taps(sigma: f32) -> Vec<f32> {
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
pub(super) fn pad_replicate(
    src: &[f32],
    h: usize,
    w: usize,
    pad: usize,
    dst: &mut Vec<f32>,
) -> usize {
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
pub(super) fn unpitch(src: &[f32], pitch: usize, w: usize, dst: &mut [f32]) {
    for (d, s) in dst.chunks_mut(w).zip(src.chunks(pitch)) {
        d.copy_from_slice(&s[..w]);
    }
}

/// Separable Gaussian filter, edges replicated. Both passes work on the padded layout so
/// that each tap is one long vectorised loop (the columns past `w` are computed, not used).
#[inline(always)]
pub(super) fn blur(plane: &mut [f32], h: usize, w: usize, taps: &[f32], ws: &mut Workspace) {
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
