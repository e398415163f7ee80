//! Running a corruption: on one image ([`Corruption::apply`]), fused with the caller's
//! conversions ([`Corruption::apply_fused`], what the sampler and its cache use), on a batch
//! ([`Corruption::corrupt_batch`]), or on bytes where that gives the same values
//! ([`Corruption::apply_bytes`]). The whole image runs in one function compiled for AVX2
//! where the processor has it, so every kernel inlined into it vectorises with AVX2.

use rayon::prelude::*;

use super::blur::blur;
use super::contrast::contrast;
use super::geometric::{rotate, shear};
use super::info::{
    CONTRAST_FACTOR, ELASTIC_STD, IMPULSE_AMOUNT, OCCLUSION_PATCHES, REFERENCE_SIDE,
    ROTATE_RADIANS, SHEAR_FACTOR,
};
use super::morphology::morph;
use super::noise::{gaussian_noise, gaussian_noise_bytes, impulse_noise, impulse_noise_bytes, Isa};
use super::occlusion::occlude;
use super::rng::StreamKey;
use super::{grown, Corruption, Kind, Plan, Workspace};
use crate::error::{value_err, Result};
use crate::pixel::{clamp, Pixel};
use crate::pool;

/// Batches of at least this many pixels are corrupted by the whole pool (about 0.1 ms).
const PARALLEL_MIN_PIXELS: usize = 1 << 15;

/// Where a corruption's randomness comes from: an item of a stream, or a chosen variant.
#[derive(Clone, Copy)]
pub(super) enum Draw<'a> {
    Item(&'a StreamKey, u64),
    Variant(usize),
}

impl Corruption {
    /// Corrupts one image `img` (`C * H * W` values in `[0, 1]`) in place, with the
    /// randomness of item `item` of the stream `key`.
    pub fn apply(
        &self,
        img: &mut [f32],
        key: &StreamKey,
        item: u64,
        ws: &mut Workspace,
    ) -> Result<()> {
        if img.len() != self.item_size() {
            return value_err(format!(
                "image: expected {} values ({:?}), got {}",
                self.item_size(),
                self.shape,
                img.len()
            ));
        }
        self.apply_unchecked(img, key, item, ws);
        Ok(())
    }

    /// `apply` once the length is known to be right.
    pub(crate) fn apply_unchecked(
        &self,
        img: &mut [f32],
        key: &StreamKey,
        item: u64,
        ws: &mut Workspace,
    ) {
        self.apply_fused(
            img,
            |_| {},
            |unit| {
                for v in unit.iter_mut() {
                    *v = clamp(*v, 0.0, 1.0);
                }
            },
            key,
            item,
            ws,
        )
    }

    /// One image through `load` (fills `unit` with its `[0, 1]` values), the corruption, and
    /// `store`, which gets the result *unclamped* and must clamp it to `[0, 1]` (interpolation
    /// and blur round just past the ends). The three run as one function compiled for AVX2
    /// where the processor has it, so the conversions vectorise too.
    #[inline(always)]
    pub(crate) fn apply_fused<L, S>(
        &self,
        unit: &mut [f32],
        load: L,
        store: S,
        key: &StreamKey,
        item: u64,
        ws: &mut Workspace,
    ) where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        self.fused(unit, load, store, Draw::Item(key, item), ws)
    }

    /// `apply_fused` giving variant `variant` (below [`variants`](Self::variants)), the
    /// same bits as `apply_fused` for an item whose [`variant_of`](Self::variant_of) it is.
    #[inline(always)]
    pub(crate) fn apply_variant_fused<L, S>(
        &self,
        unit: &mut [f32],
        load: L,
        store: S,
        variant: usize,
        ws: &mut Workspace,
    ) where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        debug_assert!(variant < self.variants().unwrap_or(0), "no such variant");
        self.fused(unit, load, store, Draw::Variant(variant), ws)
    }

    #[inline(always)]
    fn fused<L, S>(&self, unit: &mut [f32], load: L, store: S, draw: Draw, ws: &mut Workspace)
    where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            return unsafe { self.fused_avx2(unit, load, store, draw, ws) };
        }
        load(unit);
        self.apply_impl::<false>(unit, draw, ws);
        store(unit);
    }

    /// `fused` compiled for AVX2 (the portable build targets SSE2). The results are the
    /// same bits: no floating-point operation is reordered or fused.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fused_avx2<L, S>(
        &self,
        unit: &mut [f32],
        load: L,
        store: S,
        draw: Draw,
        ws: &mut Workspace,
    ) where
        L: FnOnce(&mut [f32]),
        S: FnOnce(&mut [f32]),
    {
        load(unit);
        self.apply_impl::<true>(unit, draw, ws);
        store(unit);
    }

    /// The corruption, unclamped. `AVX2`: running inside `fused_avx2`, so AVX2 intrinsics
    /// may be used.
    #[inline(always)]
    pub(super) fn apply_impl<const AVX2: bool>(
        &self,
        img: &mut [f32],
        draw: Draw,
        ws: &mut Workspace,
    ) {
        let s = self.severity as usize - 1;
        let [_, h, w] = self.shape;
        let plane = h * w;
        let scale = h.min(w) as f32 / REFERENCE_SIDE;
        let background = self.ink.background();
        let rng = || match draw {
            Draw::Item(key, item) => key.item(item),
            Draw::Variant(_) => unreachable!("only finite-variant corruptions take a variant"),
        };
        // Rotation and shear: variant 0 turns one way, 1 the other.
        let sign = || {
            let variant = match draw {
                Draw::Item(key, item) => self.variant_of(key, item),
                Draw::Variant(v) => v,
            };
            if variant == 0 {
                1.0
            } else {
                -1.0
            }
        };
        match (&self.plan, self.kind) {
            (Plan::Noise(table), _) => gaussian_noise::<AVX2>(img, table, &mut rng()),
            (_, Kind::ImpulseNoise) => impulse_noise::<AVX2>(img, IMPULSE_AMOUNT[s], &mut rng()),
            (_, Kind::Contrast) => {
                for p in img.chunks_mut(plane) {
                    contrast(p, CONTRAST_FACTOR[s]);
                }
            }
            (Plan::Blur(taps), _) => {
                for p in img.chunks_mut(plane) {
                    blur(p, h, w, taps, ws);
                }
            }
            (Plan::Morph { pad, taps }, kind) => {
                for p in img.chunks_mut(plane) {
                    morph(p, h, w, *pad, taps, kind == Kind::Thicken, self.ink, ws);
                }
            }
            (Plan::Occlusion { side }, _) => occlude(
                img,
                [h, w],
                *side,
                OCCLUSION_PATCHES[s],
                self.ink.value(),
                rng(),
            ),
            (Plan::Elastic(field), _) => {
                let std = ELASTIC_STD[s] * scale;
                field.apply::<AVX2>(img, [h, w], std, &mut rng(), background, ws)
            }
            (_, Kind::Rotate) => {
                let theta = sign() * ROTATE_RADIANS[s];
                for p in img.chunks_mut(plane) {
                    rotate::<AVX2>(p, h, w, theta, background, ws);
                }
            }
            (_, Kind::Shear) => {
                let k = -sign() * SHEAR_FACTOR[s];
                shear::<AVX2>(img, h, w, k, background, ws);
            }
            _ => unreachable!("every kind has a plan"),
        }
    }

    /// Corrupts every image of `images` (`n * item_size` values) into `out`, image `j` with
    /// the randomness of item `j` of stream `index` under `seed`. In parallel for large
    /// batches; the result does not depend on the thread count.
    pub fn corrupt_batch<T: Pixel>(
        &self,
        images: &[T],
        out: &mut [T],
        seed: u64,
        index: u64,
    ) -> Result<()> {
        let d = self.item_size();
        if !images.len().is_multiple_of(d) {
            return value_err(format!(
                "images: {} values are not a whole number of images of {:?}",
                images.len(),
                self.shape
            ));
        }
        if out.len() != images.len() {
            return value_err(format!(
                "out: holds {} values, needs {}",
                out.len(),
                images.len()
            ));
        }
        T::check(images)?;
        let key = StreamKey::new(seed, index);
        let one = |j: usize, src: &[T], dst: &mut [T], (unit, ws): &mut (Vec<f32>, Workspace)| {
            // Bytes without the float round trip, where that gives the same values.
            if let (Some(s), Some(d)) = (T::bytes(src), T::bytes_mut(dst)) {
                if self.apply_bytes(s, d, &key, j as u64) {
                    return;
                }
            }
            let unit = grown(unit, d);
            let (load, store) = (
                |u: &mut [f32]| T::load(src, u),
                |u: &mut [f32]| T::store(u, dst),
            );
            self.apply_fused(unit, load, store, &key, j as u64, ws);
        };
        let n = images.len() / d;
        let init = || (Vec::new(), Workspace::default());
        pool::install_if(n > 1 && n * d >= PARALLEL_MIN_PIXELS, |par| {
            if par {
                images
                    .par_chunks(d)
                    .zip(out.par_chunks_mut(d))
                    .enumerate()
                    .for_each_init(init, |st, (j, (src, dst))| one(j, src, dst, st));
            } else {
                let mut st = init();
                for (j, (src, dst)) in images.chunks(d).zip(out.chunks_mut(d)).enumerate() {
                    one(j, src, dst, &mut st);
                }
            }
        });
        Ok(())
    }

    /// Corrupts the bytes `src` (one image) into `dst` without floats where the corruption
    /// allows it: occlusion and impulse noise only set pixels to 0 or 255, and the other
    /// bytes survive the float round trip exactly; Gaussian noise adds whole grey levels. So
    /// this gives the bytes of the float path rounded (tested). Returns false, writing
    /// nothing, for the other corruptions.
    pub fn apply_bytes(&self, src: &[u8], dst: &mut [u8], key: &StreamKey, item: u64) -> bool {
        let s = self.severity as usize - 1;
        let [_, h, w] = self.shape;
        let ink = if self.ink.value() == 0.0 { 0 } else { 255 };
        match (&self.plan, self.kind) {
            (Plan::Occlusion { side }, _) => {
                dst.copy_from_slice(src);
                occlude(
                    dst,
                    [h, w],
                    *side,
                    OCCLUSION_PATCHES[s],
                    ink,
                    key.item(item),
                );
            }
            (_, Kind::ImpulseNoise) => {
                let (amount, isa) = (IMPULSE_AMOUNT[s], Isa::detected());
                impulse_noise_bytes(src, dst, amount, &mut key.item(item), isa);
            }
            (Plan::Noise(table), _) => {
                gaussian_noise_bytes(src, dst, table, &mut key.item(item), Isa::detected());
            }
            _ => return false,
        }
        true
    }
}
