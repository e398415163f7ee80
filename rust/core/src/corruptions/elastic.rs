//! `elastic`: a smooth random displacement field (`ELASTIC_BASIS` x `ELASTIC_BASIS` Gaussian
//! bumps with normal coefficients), the image resampled bilinearly at the displaced points.

use super::rng::ItemRng;
use super::simd::{axpy, LANES};
use super::warp::{padded_len, padded_pitch, sample_point, warp_huge, warp_planes, WARP_PAD};
use super::{grown, Workspace};

/// Basis functions per axis of the elastic displacement field (correlation ~ side / 4).
pub(super) const ELASTIC_BASIS: usize = 4;

/// The shape-dependent part of the elastic corruption: basis functions, `phi_x[k * P + x]`
/// (zero from `W` to the pitch `P`, `W` rounded up to whole vectors) and `phi_y[k * H + y]`,
/// each column of unit norm; `ramp[x] = x` for `x < P`.
#[derive(Debug, Clone)]
pub(super) struct ElasticPlan {
    pub(super) phi_x: Vec<f32>,
    pub(super) phi_y: Vec<f32>,
    pub(super) ramp: Vec<f32>,
}

impl ElasticPlan {
    /// The plan for `h x w` planes.
    pub(super) fn new(h: usize, w: usize) -> Self {
        Self {
            phi_x: elastic_basis(w)
                .chunks(w)
                .flat_map(|row| {
                    row.iter()
                        .copied()
                        .chain(vec![0.0; w.next_multiple_of(LANES) - w])
                })
                .collect(),
            phi_y: elastic_basis(h),
            ramp: (0..w.next_multiple_of(LANES)).map(|x| x as f32).collect(),
        }
    }

    /// Displaces every `h x w` plane of `img` by one field, drawn from `rng` with std `std`
    /// (pixels); what comes from outside the image is `background`.
    #[inline(always)]
    pub(super) fn apply<const AVX2: bool>(
        &self,
        img: &mut [f32],
        [h, w]: [usize; 2],
        std: f32,
        rng: &mut ItemRng,
        background: f32,
        ws: &mut Workspace,
    ) {
        let Self { phi_x, phi_y, ramp } = self;
        let plane = h * w;
        let pitch = ramp.len();
        let rows = grown(&mut ws.b, 2 * ELASTIC_BASIS * pitch);
        elastic_rows(rows, rng, std, phi_x, pitch);
        let field = ElasticField {
            rows,
            phi_y,
            ramp,
            h,
            w,
        };
        if padded_len(h, w) > i32::MAX as usize {
            let (sx, sy) = (grown(&mut ws.c, plane), grown(&mut ws.d, plane));
            field.coordinates(sx, sy);
            warp_huge(img, h, w, background, ws);
        } else {
            let Workspace { c, d, idx, .. } = ws;
            let (tx, ty) = (grown(c, plane + pitch), grown(d, plane + pitch));
            if idx.len() < plane + pitch {
                idx.resize(plane + pitch, 0);
            }
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: AVX2 is available (AVX2 is only set inside `fused_avx2`),
                // the buffers hold plane + pitch values, the padded image fits i32.
                unsafe { field.sample_points_avx2(tx, ty, idx) };
            } else {
                field.sample_points(tx, ty, idx);
            }
            #[cfg(not(target_arch = "x86_64"))]
            field.sample_points(tx, ty, idx);
            warp_planes::<AVX2>(img, h, w, background, ws);
        }
    }
}

/// `ELASTIC_BASIS` Gaussian bumps over `n` pixels, scaled so that at every pixel the squares
/// sum to 1: a field with i.i.d. N(0, s^2) coefficients then has std `s` everywhere.
fn elastic_basis(n: usize) -> Vec<f32> {
    let k = ELASTIC_BASIS;
    let width = n as f32 / k as f32;
    let mut phi = vec![0f32; k * n];
    for x in 0..n {
        let mut norm = 0f32;
        for j in 0..k {
            let c = (j as f32 + 0.5) * width - 0.5;
            let d = (x as f32 - c) / width;
            let v = (-0.5 * d * d).exp();
            phi[j * n + x] = v;
            norm += v * v;
        }
        let norm = norm.sqrt();
        for j in 0..k {
            phi[j * n + x] /= norm;
        }
    }
    phi
}

/// The elastic field's coefficient rows: `rows[a * 4 + l][x] = sum_k A_alk phi_x[k](x)`
/// for the x (`a = 0`) then the y displacement, `A_alk ~ N(0, std^2)`; each row `pitch`
/// long (zero past the image, as `phi_x`).
#[inline(always)]
fn elastic_rows(rows: &mut [f32], rng: &mut ItemRng, std: f32, phi_x: &[f32], pitch: usize) {
    let k = ELASTIC_BASIS;
    for field in rows.chunks_exact_mut(k * pitch) {
        let mut coef = [[0f32; ELASTIC_BASIS]; ELASTIC_BASIS];
        for row in coef.iter_mut() {
            for v in row.iter_mut() {
                *v = std * rng.normal();
            }
        }
        for (tl, a) in field.chunks_exact_mut(pitch).zip(coef) {
            tl.fill(0.0);
            for (px, a) in phi_x.chunks_exact(pitch).zip(a) {
                axpy(tl, px, a);
            }
        }
    }
}

/// A drawn elastic displacement: source point `(x + dx, y + dy)` of pixel `(x, y)`, with
/// `dx = sum_l phi_y[l](y) rows[l][x]` and `dy` from rows 4..8.
struct ElasticField<'a> {
    rows: &'a [f32],
    phi_y: &'a [f32],
    ramp: &'a [f32],
    h: usize,
    w: usize,
}

impl ElasticField<'_> {
    /// `base + sum_l py[l] * rows[first + l][x]`, summed in that order.
    #[inline(always)]
    fn at(&self, base: f32, py: [f32; ELASTIC_BASIS], first: usize, x: usize) -> f32 {
        const _: () = assert!(ELASTIC_BASIS == 4, "ElasticField::at sums four rows");
        let pitch = self.ramp.len();
        let r = |l: usize| self.rows[(first + l) * pitch + x];
        base + py[0] * r(0) + py[1] * r(1) + py[2] * r(2) + py[3] * r(3)
    }

    #[inline(always)]
    fn py(&self, y: usize) -> [f32; ELASTIC_BASIS] {
        std::array::from_fn(|l| self.phi_y[l * self.h + y])
    }

    /// The source coordinates of every pixel, `(sx, sy)`, one plane each.
    fn coordinates(&self, sx: &mut [f32], sy: &mut [f32]) {
        let (w, k) = (self.w, ELASTIC_BASIS);
        for (y, (rx, ry)) in sx.chunks_mut(w).zip(sy.chunks_mut(w)).enumerate() {
            let py = self.py(y);
            for (x, (vx, vy)) in rx.iter_mut().zip(ry).enumerate() {
                *vx = self.at(self.ramp[x], py, 0, x);
                *vy = self.at(y as f32, py, k, x);
            }
        }
    }

    /// What `sample_point` makes of [`coordinates`](Self::coordinates), straight from the
    /// field (`tx`, `ty`, `idx`: a plane each).
    fn sample_points(&self, tx: &mut [f32], ty: &mut [f32], idx: &mut [u32]) {
        let (h, w, k) = (self.h, self.w, ELASTIC_BASIS);
        let (pw, plane) = (padded_pitch(w), h * w);
        let (tx, ty, idx) = (&mut tx[..plane], &mut ty[..plane], &mut idx[..plane]);
        let rows = tx
            .chunks_mut(w)
            .zip(ty.chunks_mut(w))
            .zip(idx.chunks_mut(w));
        for (y, ((tx, ty), idx)) in rows.enumerate() {
            let py = self.py(y);
            for (x, ((tx, ty), i)) in tx.iter_mut().zip(ty).zip(idx).enumerate() {
                let (sx, sy) = (self.at(self.ramp[x], py, 0, x), self.at(y as f32, py, k, x));
                (*tx, *ty, *i) = sample_point(sx, sy, h, w, pw);
            }
        }
    }

    /// [`sample_points`](Self::sample_points) with AVX2, the same operations (the same
    /// bits). Rows go in whole vectors, each stored whole: a row's tail spills over the
    /// start of the next row, which is computed after it, so the buffers hold a plane plus
    /// `pitch - w` values.
    ///
    /// # Safety
    /// AVX2 must be available; `tx`, `ty` and `idx` hold at least `h * w + pitch` values;
    /// the padded image fits i32.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn sample_points_avx2(&self, tx: &mut [f32], ty: &mut [f32], idx: &mut [u32]) {
        use std::arch::x86_64::*;
        let (h, w, k) = (self.h, self.w, ELASTIC_BASIS);
        let pitch = self.ramp.len();
        assert!(tx.len().min(ty.len()).min(idx.len()) >= h * w + pitch);
        assert!(self.rows.len() >= 2 * k * pitch && pitch.is_multiple_of(LANES));
        let pad = WARP_PAD as f32;
        let (lo, xmax, ymax) = (
            _mm256_set1_ps(pad - 1.0),
            _mm256_set1_ps((w + WARP_PAD) as f32),
            _mm256_set1_ps((h + WARP_PAD) as f32),
        );
        let (padv, pwv) = (
            _mm256_set1_ps(pad),
            _mm256_set1_epi32(padded_pitch(w) as i32),
        );
        let rows = self.rows.as_ptr();
        for y in 0..h {
            let py = self.py(y).map(|p| _mm256_set1_ps(p));
            let fy = _mm256_set1_ps(y as f32);
            for x0 in (0..pitch).step_by(LANES) {
                // SAFETY: x0 + LANES <= pitch bounds the reads of rows and ramp (asserted
                // sizes), y * w + x0 + LANES <= h * w + pitch the stores.
                unsafe {
                    let row = |l: usize| _mm256_loadu_ps(rows.add(l * pitch + x0));
                    let sum = |base: __m256, first: usize| {
                        let mut v = base;
                        for (l, p) in py.iter().enumerate() {
                            v = _mm256_add_ps(v, _mm256_mul_ps(*p, row(first + l)));
                        }
                        v
                    };
                    let sx = sum(_mm256_loadu_ps(self.ramp.as_ptr().add(x0)), 0);
                    let sy = sum(fy, k);
                    // clamp(v + pad, lo, max): maxps returns its second operand for NaN
                    let fx = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(sx, padv), lo), xmax);
                    let fy = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(sy, padv), lo), ymax);
                    let (ix, iy) = (_mm256_cvttps_epi32(fx), _mm256_cvttps_epi32(fy));
                    let at = y * w + x0;
                    let frac_x = _mm256_sub_ps(fx, _mm256_cvtepi32_ps(ix));
                    let frac_y = _mm256_sub_ps(fy, _mm256_cvtepi32_ps(iy));
                    _mm256_storeu_ps(tx.as_mut_ptr().add(at), frac_x);
                    _mm256_storeu_ps(ty.as_mut_ptr().add(at), frac_y);
                    let i = _mm256_add_epi32(_mm256_mullo_epi32(iy, pwv), ix);
                    _mm256_storeu_si256(idx.as_mut_ptr().add(at) as *mut __m256i, i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corruptions::apply::Draw;
    use crate::corruptions::info::{ELASTIC_STD, REFERENCE_SIDE};
    use crate::corruptions::warp::warp;
    use crate::corruptions::{Corruption, Plan, StreamKey};

    #[test]
    fn elastic_is_the_bilinear_warp_of_its_field() {
        // The fused sample points (rows in whole vectors, spilling into the next row) give
        // what the plain warp makes of the field's coordinates, on both paths.
        for shape in [[1, 28, 28], [2, 17, 13], [1, 5, 8], [1, 1, 1], [3, 9, 31]] {
            let c = Corruption::new("elastic", 5, "dark", shape).unwrap();
            let Plan::Elastic(ElasticPlan { phi_x, phi_y, ramp }) = &c.plan else {
                unreachable!("elastic plan")
            };
            let [_, h, w] = shape;
            let n = shape.iter().product();
            let img: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
            let key = StreamKey::new(5, 2);
            let mut rows = vec![0f32; 2 * ELASTIC_BASIS * ramp.len()];
            let std = ELASTIC_STD[4] * h.min(w) as f32 / REFERENCE_SIDE;
            elastic_rows(&mut rows, &mut key.item(9), std, phi_x, ramp.len());
            let field = ElasticField {
                rows: &rows,
                phi_y,
                ramp,
                h,
                w,
            };
            let mut ws = Workspace {
                c: vec![0.0; h * w],
                d: vec![0.0; h * w],
                ..Default::default()
            };
            field.coordinates(&mut ws.c, &mut ws.d);
            let mut want = img.clone();
            warp::<false>(&mut want, h, w, c.ink.background(), &mut ws);
            let mut got = img.clone();
            c.apply_impl::<false>(&mut got, Draw::Item(&key, 9), &mut ws);
            assert_eq!(got, want, "{shape:?}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut fast = img.clone();
                let draw = Draw::Item(&key, 9);
                // SAFETY: AVX2 is available (checked above).
                unsafe { c.fused_avx2(&mut fast, |_| {}, |_| {}, draw, &mut ws) };
                assert_eq!(fast, want, "{shape:?} avx2");
            }
        }
    }
}
