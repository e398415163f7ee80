//! Episodes of pre-extracted feature vectors (SimpleShot-style evaluation): the same class
//! index and episode draws as the image path ([`EpisodeSampler::draw`]), so episode `i` picks
//! the same items for the same labels and seed; the items are `f32` rows of `item_size`
//! values, copied as they are.

use rayon::prelude::*;

use super::{BatchOut, EpisodeSampler};
use crate::error::{value_err, Result};
use crate::pixel::prefetch;
use crate::pool::{self, PARALLEL_MIN_BYTES};

/// How many items ahead of the copy the gather prefetches.
const PREFETCH_AHEAD: usize = 4;

/// Refuses a feature matrix of rows of `dim` values that holds a NaN or an infinity,
/// naming the first one's item and dimension.
pub fn check_features(features: &[f32], dim: usize) -> Result<()> {
    if dim == 0 {
        return value_err("features: each item needs at least one dimension");
    }
    match features.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(at) => value_err(format!(
            "features: item {}, dimension {} is {}; features must be finite (NaN and \
             infinities are refused)",
            at / dim,
            at % dim,
            features[at]
        )),
    }
}

impl EpisodeSampler {
    /// Fills `out` with the feature episodes `start .. start + count`, in parallel when the
    /// batch is large. `features` is the whole dataset, `n_items * item_size` values.
    pub fn sample_features_into(
        &self,
        features: &[f32],
        start: u64,
        count: usize,
        out: BatchOut<'_, f32>,
    ) -> Result<()> {
        if Some(features.len()) != self.n_items.checked_mul(self.item_size) {
            return value_err(format!(
                "features: expected {} items of {} values, got {} values",
                self.n_items,
                self.item_size,
                features.len()
            ));
        }
        self.check_out(start, count, &out)?;
        if count == 0 {
            return Ok(());
        }
        let (w, s, q, d) = (self.ways, self.shots, self.queries, self.item_size);
        let work = (count * w * (s + q) * d).saturating_mul(4);
        // A query-free episode has empty query chunks; chunks_mut rejects size 0.
        let (qchunk, qychunk) = ((w * q * d).max(1), (w * q).max(1));
        let mut qx_holder: Vec<f32> = Vec::new();
        let mut qy_holder: Vec<i64> = Vec::new();
        let (qx_all, qy_all): (&mut [f32], &mut [i64]) = if q == 0 {
            qx_holder.resize(count, 0.0);
            qy_holder.resize(count, 0);
            (&mut qx_holder[..], &mut qy_holder[..])
        } else {
            (out.query_x, out.query_y)
        };
        let one = |j: usize, parts: Parts<'_>, picks: &mut Vec<u32>| {
            let (sx, sy, qx, qy, cl) = parts;
            let (qx, qy) = if q == 0 {
                (&mut qx[..0], &mut qy[..0])
            } else {
                (qx, qy)
            };
            self.feature_episode(features, start + j as u64, (sx, sy, qx, qy, cl), picks);
        };
        pool::install_if(count > 1 && work >= PARALLEL_MIN_BYTES, |par| {
            let sx = out.support_x;
            let (sy, cl) = (out.support_y, out.classes);
            if par {
                (
                    sx.par_chunks_mut(w * s * d),
                    sy.par_chunks_mut(w * s),
                    qx_all.par_chunks_mut(qchunk),
                    qy_all.par_chunks_mut(qychunk),
                    cl.par_chunks_mut(w),
                )
                    .into_par_iter()
                    .enumerate()
                    .for_each_init(
                        || Vec::with_capacity(w * (s + q)),
                        |picks, (j, parts)| one(j, parts, picks),
                    );
            } else {
                let mut picks = Vec::with_capacity(w * (s + q));
                let chunks = sx
                    .chunks_mut(w * s * d)
                    .zip(sy.chunks_mut(w * s))
                    .zip(qx_all.chunks_mut(qchunk).zip(qy_all.chunks_mut(qychunk)))
                    .zip(cl.chunks_mut(w));
                for (j, (((sx, sy), (qx, qy)), cl)) in chunks.enumerate() {
                    one(j, (sx, sy, qx, qy, cl), &mut picks);
                }
            }
        });
        Ok(())
    }

    /// Writes feature episode `episode` into its parts of the outputs.
    fn feature_episode(
        &self,
        features: &[f32],
        episode: u64,
        (sx, sy, qx, qy, cl): Parts<'_>,
        picks: &mut Vec<u32>,
    ) {
        let (s, q, d) = (self.shots, self.queries, self.item_size);
        self.draw(episode, cl, picks);
        for (i, &item) in picks.iter().enumerate() {
            if let Some(&ahead) = picks.get(i + PREFETCH_AHEAD) {
                let row = &features[ahead as usize * d..];
                prefetch::<false>(row.as_ptr() as *const u8, d * 4);
            }
            let (way, k) = (i / (s + q), i % (s + q));
            let src = &features[item as usize * d..(item as usize + 1) * d];
            if k < s {
                let pos = way * s + k;
                sy[pos] = way as i64;
                sx[pos * d..(pos + 1) * d].copy_from_slice(src);
            } else {
                let pos = way * q + (k - s);
                qy[pos] = way as i64;
                qx[pos * d..(pos + 1) * d].copy_from_slice(src);
            }
        }
    }
}

/// One episode's output slices: support_x, support_y, query_x, query_y, classes.
type Parts<'a> = (
    &'a mut [f32],
    &'a mut [i64],
    &'a mut [f32],
    &'a mut [i64],
    &'a mut [i64],
);
