//! `thicken` and `thin`: dilation and erosion of the ink by a soft disk of radius `r`, whose
//! neighbour at distance `d > 0` has weight `clamp(r + 1 - d, 0, 1)`, so the result grows
//! continuously with `r`. Dilation: `a'(p) = max_o w(o) a(p + o)`; erosion:
//! `a'(p) = min_o 1 - w(o) (1 - a(p + o))`, with `a` the ink amount (`1 - x` for dark ink).

use super::blur::{pad_replicate, unpitch};
use super::simd::{max_scaled, min_affine};
use super::{grown, Ink, Plan, Workspace};

pub(super) fn morph_plan(radius: f32) -> Plan {
    let reach = (radius + 1.0).ceil() as isize;
    let mut taps = Vec::new();
    for dy in -reach..=reach {
        for dx in -reach..=reach {
            let d = ((dx * dx + dy * dy) as f32).sqrt();
            let wgt = (radius + 1.0 - d).clamp(0.0, 1.0);
            if (dx, dy) != (0, 0) && wgt > 0.0 {
                taps.push((dy, dx, wgt));
            }
        }
    }
    let pad = taps
        .iter()
        .map(|&(dy, dx, _)| dy.unsigned_abs().max(dx.unsigned_abs()))
        .max()
        .unwrap_or(0);
    Plan::Morph { pad, taps }
}

/// Soft-disk dilation (`grow`) or erosion of the ink of one plane. In pixel values, growing
/// dark ink is `x' = min_o 1 - w (1 - x)` and shrinking it `x' = max_o w x` (light ink: the
/// other way round), so untouched pixels keep their exact value.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn morph(
    plane: &mut [f32],
    h: usize,
    w: usize,
    pad: usize,
    taps: &[(isize, isize, f32)],
    grow: bool,
    ink: Ink,
    ws: &mut Workspace,
) {
    let take_max = grow == (ink == Ink::Light);
    let pw = pad_replicate(plane, h, w, pad, &mut ws.a);
    let padded = &ws.a[..(h + 2 * pad) * pw];
    // The result at the padded pitch: one long loop per tap.
    let n = (h - 1) * pw + w;
    let acc = grown(&mut ws.b, n);
    let centre = pad * pw + pad;
    acc.copy_from_slice(&padded[centre..centre + n]);
    for &(dy, dx, wgt) in taps {
        let off = (centre as isize + dy * pw as isize + dx) as usize;
        let src = &padded[off..off + n];
        if take_max {
            max_scaled(acc, src, wgt);
        } else {
            min_affine(acc, src, 1.0 - wgt, wgt);
        }
    }
    unpitch(acc, pw, w, plane);
}
