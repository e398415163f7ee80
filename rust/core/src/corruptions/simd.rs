//! Loop kernels over slices shared by the corruptions, and the AVX2 versions of the ones that
//! LLVM does not vectorise well. Every AVX2 path does the same floating-point operations in
//! the same order as the portable one (no fused multiply-adds), so both give the same bits.

/// f32 lanes of an AVX2 vector.
pub(super) const LANES: usize = 8;

// Loop kernels over slice arguments: as parameters the slices are known not to overlap, so
// the loops vectorise even once inlined into one big function. Selects are written as
// `max`/`min` or bit masks: LLVM turns `*a = if c { v } else { *a }` into masked stores,
// which are microcoded and very slow on AMD processors.

/// `dst += t * src`
#[inline(always)]
pub(super) fn axpy(dst: &mut [f32], src: &[f32], t: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += t * s;
    }
}

/// `acc = max(acc, wgt * src)`
#[inline(always)]
pub(super) fn max_scaled(acc: &mut [f32], src: &[f32], wgt: f32) {
    for (a, s) in acc.iter_mut().zip(src) {
        *a = a.max(wgt * s);
    }
}

/// `acc = min(acc, keep + wgt * src)`
#[inline(always)]
pub(super) fn min_affine(acc: &mut [f32], src: &[f32], keep: f32, wgt: f32) {
    for (a, s) in acc.iter_mut().zip(src) {
        *a = a.min(keep + wgt * s);
    }
}

/// `dst = a + f * (b - a)`. The rows here are short (28 pixels), too short for LLVM's
/// vectorised loop (four vectors per iteration), hence the explicit AVX2 version.
#[inline(always)]
pub(super) fn lerp<const AVX2: bool>(dst: &mut [f32], a: &[f32], b: &[f32], f: f32) {
    let n = dst.len().min(a.len()).min(b.len());
    let (dst, a, b) = (&mut dst[..n], &a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is available (AVX2 is only set inside `fused_avx2`), and the
        // three slices have the same length.
        return unsafe { lerp_avx2(dst, a, b, f) };
    }
    lerp_scalar(dst, a, b, f);
}

#[inline(always)]
fn lerp_scalar(dst: &mut [f32], a: &[f32], b: &[f32], f: f32) {
    for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
        *d = a + f * (b - a);
    }
}

/// `lerp` eight values at a time (the same operations, unfused: the same bits).
///
/// # Safety
/// AVX2 must be available; `a` and `b` hold at least `dst.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lerp_avx2(dst: &mut [f32], a: &[f32], b: &[f32], f: f32) {
    use std::arch::x86_64::*;
    let n = dst.len();
    let fv = _mm256_set1_ps(f);
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: k + 8 <= n bounds the loads and the store.
        unsafe {
            let av = _mm256_loadu_ps(a.as_ptr().add(k));
            let bv = _mm256_loadu_ps(b.as_ptr().add(k));
            let v = _mm256_add_ps(av, _mm256_mul_ps(fv, _mm256_sub_ps(bv, av)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(k), v);
        }
        k += 8;
    }
    lerp_scalar(&mut dst[k..], &a[k..], &b[k..], f);
}
