//! The element types of images and their conversions: bytes `0..=255`, and floats either in
//! `[0, 1]` ("unit" values, what the corruptions work on) or normalised per channel through
//! a [`PixelTable`] (the sampler's float output).
//!
//! One trait, [`Pixel`], for both users: the corruptions' batches read and write it as unit
//! values, the sampler writes its outputs (clean or corrupted items) in it, and the
//! sampler's cache keeps corrupted items in it. This module depends on no other of the
//! crate's but `error`, so the sampler, its cache and the corruptions can all use it.

use crate::error::{value_err, Result};

/// Element type of images: bytes `0..=255` or `f32`.
pub trait Pixel: Copy + Default + Send + Sync + 'static {
    /// Rejects values outside the type's unit range (floats outside `[0, 1]`, NaN).
    fn check(images: &[Self]) -> Result<()>;
    /// Unit values to floats: bytes `v / 255` ([`byte_to_unit`]), floats as they are.
    fn load(src: &[Self], dst: &mut [f32]);
    /// Floats to unit values, clamped to `[0, 1]` (bytes: [`unit_to_u8`]).
    fn store(src: &[f32], dst: &mut [Self]);
    /// The values as bytes, if they are bytes.
    fn bytes(values: &[Self]) -> Option<&[u8]>;
    /// The values as bytes, if they are bytes.
    fn bytes_mut(values: &mut [Self]) -> Option<&mut [u8]>;
    /// The values as floats, if they are floats.
    fn floats(values: &[Self]) -> Option<&[f32]>;
    /// Sampler output from dataset bytes: a copy, or floats through `table`.
    fn convert(src: &[u8], dst: &mut [Self], table: &PixelTable);
    /// Sampler output of a corrupted item, from its floats clamped to `[0, 1]` here.
    fn from_unit(src: &[f32], dst: &mut [Self], table: &PixelTable);
    /// Sampler output from a corrupted item kept by [`store`](Self::store): the same values
    /// as `from_unit` on the item's floats.
    fn from_cached(src: &[Self], dst: &mut [Self], table: &PixelTable);
    /// Sets output pixel `pixel` (of `dst`, one item) from its `[0, 1]` float `value`, as
    /// `from_unit` would.
    fn patch(dst: &mut [Self], pixel: usize, value: f32, table: &PixelTable);
    /// This type's value of `holder`, which keeps one per element type.
    fn pick<P: PerPixel>(holder: &P) -> &P::Of<Self>;
}

/// Something kept once per element type, as the sampler's cache keeps its rows for byte and
/// for float output; [`Pixel::pick`] gives the one of a type.
pub trait PerPixel {
    type Of<T>;
    fn for_u8(&self) -> &Self::Of<u8>;
    fn for_f32(&self) -> &Self::Of<f32>;
}

impl Pixel for u8 {
    fn check(_: &[u8]) -> Result<()> {
        Ok(())
    }
    #[inline(always)]
    fn load(src: &[u8], dst: &mut [f32]) {
        // The sampler's float conversion, bit for bit.
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            *d = byte_to_unit(*s);
        }
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [u8]) {
        unit_to_u8(src, dst);
    }
    #[inline(always)]
    fn bytes(values: &[u8]) -> Option<&[u8]> {
        Some(values)
    }
    #[inline(always)]
    fn bytes_mut(values: &mut [u8]) -> Option<&mut [u8]> {
        Some(values)
    }
    fn floats(_: &[u8]) -> Option<&[f32]> {
        None
    }
    fn convert(src: &[u8], dst: &mut [u8], _: &PixelTable) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn from_unit(src: &[f32], dst: &mut [u8], _: &PixelTable) {
        unit_to_u8(src, dst);
    }
    fn from_cached(src: &[u8], dst: &mut [u8], _: &PixelTable) {
        dst.copy_from_slice(src);
    }
    fn patch(dst: &mut [u8], pixel: usize, value: f32, _: &PixelTable) {
        unit_to_u8(&[value], &mut dst[pixel..pixel + 1]);
    }
    fn pick<P: PerPixel>(holder: &P) -> &P::Of<u8> {
        holder.for_u8()
    }
}

impl Pixel for f32 {
    fn check(images: &[f32]) -> Result<()> {
        match images.iter().position(|v| !(0.0..=1.0).contains(v)) {
            None => Ok(()),
            Some(i) => value_err(format!(
                "images: float32 values must lie in [0, 1]; got {} at flat index {i}",
                images[i]
            )),
        }
    }
    #[inline(always)]
    fn load(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            *d = clamp(*s, 0.0, 1.0);
        }
    }
    #[inline(always)]
    fn bytes(_: &[f32]) -> Option<&[u8]> {
        None
    }
    #[inline(always)]
    fn bytes_mut(_: &mut [f32]) -> Option<&mut [u8]> {
        None
    }
    fn floats(values: &[f32]) -> Option<&[f32]> {
        Some(values)
    }
    fn convert(src: &[u8], dst: &mut [f32], table: &PixelTable) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            return unsafe { to_float_avx2(src, dst, table) };
        }
        to_float(src, dst, table)
    }
    #[inline(always)]
    fn from_unit(src: &[f32], dst: &mut [f32], table: &PixelTable) {
        if table.identity {
            // `(x - 0) / 1` is `x`, bit for bit: a clamped copy, no division.
            return f32::store(src, dst);
        }
        let planes = src.chunks(table.plane).zip(dst.chunks_mut(table.plane));
        for ((s, d), (&m, &sd)) in planes.zip(table.mean.iter().zip(&table.std)) {
            for (x, y) in s.iter().zip(d.iter_mut()) {
                *y = (clamp(*x, 0.0, 1.0) - m) / sd;
            }
        }
    }
    fn from_cached(src: &[f32], dst: &mut [f32], table: &PixelTable) {
        if table.identity {
            // Already clamped.
            return dst.copy_from_slice(src);
        }
        Self::from_unit(src, dst, table)
    }
    #[inline(always)]
    fn patch(dst: &mut [f32], pixel: usize, value: f32, table: &PixelTable) {
        let value = clamp(value, 0.0, 1.0);
        dst[pixel] = if table.identity {
            value
        } else {
            let c = pixel / table.plane;
            (value - table.mean[c]) / table.std[c]
        };
    }
    fn pick<P: PerPixel>(holder: &P) -> &P::Of<f32> {
        holder.for_f32()
    }
}

/// Per-channel byte-to-float conversion: `((v / 255) - mean[c]) / std[c]` in f32.
#[derive(Debug, Clone)]
pub struct PixelTable {
    plane: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Every mean 0 and every std 1: the conversion is plain `v / 255`.
    identity: bool,
}

impl PixelTable {
    /// `mean`/`std` hold one value or one per channel; empty means plain `v / 255`.
    pub fn new(channels: usize, plane: usize, mean: &[f32], std: &[f32]) -> Result<Self> {
        let pick = |v: &[f32], name: &str, default: f32| -> Result<Vec<f32>> {
            match v.len() {
                0 => Ok(vec![default; channels]),
                1 => Ok(vec![v[0]; channels]),
                n if n == channels => Ok(v.to_vec()),
                n if channels == 1 => value_err(format!(
                    "{name}: expected 1 value (the images have one channel), got {n}"
                )),
                n => value_err(format!(
                    "{name}: expected 1 or {channels} values (one per channel), got {n}"
                )),
            }
        };
        let mean = pick(mean, "mean", 0.0)?;
        let std = pick(std, "std", 1.0)?;
        for (c, (&m, &s)) in mean.iter().zip(&std).enumerate() {
            if !m.is_finite() {
                return value_err(format!("mean: channel {c} is {m}; must be finite"));
            }
            if !(s.is_finite() && s > 0.0) {
                return value_err(format!("std: channel {c} is {s}; must be finite and > 0"));
            }
            // pixels in [0, 1] must stay finite in float32 once normalised
            if [(0.0 - m) / s, (1.0 - m) / s]
                .iter()
                .any(|v| !v.is_finite())
            {
                return value_err(format!(
                    "mean, std: channel {c}'s (x - {m}) / {s} overflows float32 for pixels \
                     in [0, 1]"
                ));
            }
        }
        let identity = mean.iter().all(|&m| m == 0.0) && std.iter().all(|&s| s == 1.0);
        Ok(Self {
            plane,
            mean,
            std,
            identity,
        })
    }

    pub(crate) fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Values per channel.
    pub(crate) fn plane(&self) -> usize {
        self.plane
    }
}

#[inline(always)]
fn to_float(src: &[u8], dst: &mut [f32], table: &PixelTable) {
    if table.identity {
        // `(v / 255 - 0) / 1` is `v / 255` bit for bit; no division at all.
        for (x, y) in src.iter().zip(dst.iter_mut()) {
            *y = byte_to_unit(*x);
        }
        return;
    }
    let planes = src.chunks(table.plane).zip(dst.chunks_mut(table.plane));
    for ((s, d), (&m, &sd)) in planes.zip(table.mean.iter().zip(&table.std)) {
        for (x, y) in s.iter().zip(d.iter_mut()) {
            *y = (byte_to_unit(*x) - m) / sd;
        }
    }
}

/// The same conversion compiled for AVX2 (the portable build targets SSE2 only).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn to_float_avx2(src: &[u8], dst: &mut [f32], table: &PixelTable) {
    to_float(src, dst, table)
}

/// `v / 255` in f32, correctly rounded: the same bits as `v as f32 / 255.0` (tested for every
/// byte) without the division, which costs ~3.5 cycles per eight pixels. `q = v * (1/255)`
/// is off by an ulp for half the bytes; one Newton correction with the residual
/// `v - 255 q = (v - 256 q) + q`, whose two steps are exact (Sterbenz), rounds it right.
#[inline(always)]
pub fn byte_to_unit(v: u8) -> f32 {
    levels_to_unit(v as f32)
}

/// Grey levels `k` (a whole number for byte images) to `[0, 1]`: `k / 255` to the bit (a
/// multiplication and one exact correction step instead of a division).
#[inline(always)]
pub(crate) fn levels_to_unit(k: f32) -> f32 {
    const INV_255: f32 = 1.0 / 255.0;
    let q = k * INV_255;
    let residual = (k - q * 256.0) + q;
    q + residual * INV_255
}

/// `[0, 1]` floats to bytes: `floor(255 x + 0.5)`, `x` clamped first (NaN gives 0).
#[inline(always)]
pub fn unit_to_u8(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.iter_mut()) {
        let v = clamp(*s, 0.0, 1.0) * 255.0 + 0.5;
        // SAFETY: v is in [0.5, 255.5]. (`round` is a libm call on the baseline target and
        // `as` adds saturation code; either keeps the loop from vectorising.)
        *d = unsafe { v.to_int_unchecked::<i32>() } as u8;
    }
}

/// `x` clamped to `[lo, hi]` (one maxps and one minps; NaN becomes `lo`).
#[inline(always)]
pub(crate) fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    x.max(lo).min(hi)
}

/// Hints the processor to fetch the `bytes` bytes at `start` into cache, for reading or (with
/// `WRITE`) for writing, so the fetch overlaps other work (a no-op where there is no such
/// hint).
#[inline(always)]
pub(crate) fn prefetch<const WRITE: bool>(start: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..bytes).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        // Prefetching is only a hint: it never faults, whatever the address.
        let line = start.wrapping_add(offset) as *const i8;
        // SAFETY: see above.
        unsafe {
            if WRITE {
                _mm_prefetch::<_MM_HINT_ET0>(line)
            } else {
                _mm_prefetch::<_MM_HINT_T0>(line)
            }
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_to_unit_is_the_division_for_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut loaded = [0f32; 256];
        u8::load(&bytes, &mut loaded);
        for (&v, &y) in bytes.iter().zip(&loaded) {
            let divided = v as f32 / 255.0;
            assert_eq!(byte_to_unit(v).to_bits(), divided.to_bits(), "byte {v}");
            assert_eq!(y.to_bits(), divided.to_bits(), "byte {v}");
        }
    }

    #[test]
    fn noisy_levels_are_exact_bytes() {
        // (255 b/255 + d) / 255 is (b + d) / 255 to the bit, clamped to the byte's.
        for b in 0..=255u8 {
            for d in -600..=600 {
                let v = levels_to_unit(byte_to_unit(b) * 255.0 + d as f32);
                let want = byte_to_unit((b as i32 + d).clamp(0, 255) as u8);
                assert_eq!(clamp(v, 0.0, 1.0).to_bits(), want.to_bits(), "{b} {d}");
            }
        }
    }

    #[test]
    fn float_table_matches_formula() {
        let t = PixelTable::new(2, 2, &[0.5, 0.25], &[0.5, 2.0]).unwrap();
        let mut out = [0f32; 4];
        f32::convert(&[0, 255, 51, 102], &mut out, &t);
        assert_eq!(
            out,
            [
                (0.0 - 0.5) / 0.5,
                (1.0 - 0.5) / 0.5,
                (0.2 - 0.25) / 2.0,
                (0.4 - 0.25) / 2.0
            ]
        );
        assert!(PixelTable::new(2, 2, &[0.1, 0.2, 0.3], &[]).is_err());
        assert!(PixelTable::new(1, 2, &[], &[0.0]).is_err());
        assert!(PixelTable::new(1, 2, &[], &[1e-40]).is_err()); // 1 / 1e-40 is inf in f32
        assert!(PixelTable::new(1, 2, &[3e38], &[0.5]).is_err());
    }

    #[test]
    fn identity_table_is_the_general_formula_bit_for_bit() {
        let bytes: Vec<u8> = (0..=255).collect();
        for table in [
            PixelTable::new(1, 256, &[], &[]).unwrap(),
            PixelTable::new(1, 256, &[0.0], &[1.0]).unwrap(),
        ] {
            assert!(table.identity);
            let mut out = [0f32; 256];
            f32::convert(&bytes, &mut out, &table);
            for (&v, &y) in bytes.iter().zip(&out) {
                let general = ((v as f32) / 255.0 - 0.0) / 1.0;
                assert_eq!(y.to_bits(), general.to_bits(), "byte {v}");
            }
        }
    }
}
