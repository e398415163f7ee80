//! Writing a batch of episodes into the caller's buffers ([`EpisodeSampler::sample_into`]):
//! clean items are copied or converted; corrupted ones are read from the corruption cache,
//! corrupted as bytes, or corrupted through floats, in the same pass. Large batches are
//! filled by the whole pool, one episode per task.

use rayon::prelude::*;

use super::{BatchOut, EpisodeSampler};
use crate::cache::CachedRows;
use crate::corruptions::{Corruption, StreamKey, Target, Workspace};
use crate::error::{checked_product, value_err, Result};
use crate::pixel::{prefetch, Pixel, PixelTable};
use crate::pool::{self, CORRUPT_PIXEL_COST, PARALLEL_MIN_BYTES};

/// How many items ahead of the copy the sampler prefetches.
const PREFETCH_AHEAD: usize = 4;

/// `ThreadState::cache_rows` of an item not read from the cache.
const NOT_CACHED: usize = usize::MAX;

impl EpisodeSampler {
    /// Fills `out` with episodes `start .. start + count` in parallel.
    /// `images` is the whole dataset, `n_items * item_size` bytes.
    pub fn sample_into<T: Pixel>(
        &self,
        images: &[u8],
        table: &PixelTable,
        start: u64,
        count: usize,
        out: BatchOut<'_, T>,
    ) -> Result<()> {
        self.check_fill(images, table, start, count, &out)?;
        if count == 0 {
            return Ok(());
        }
        let (w, s, q, d) = (self.ways, self.shots, self.queries, self.item_size);
        let corrupt = self.corruption.as_ref();
        let corrupted_items = match corrupt {
            None => 0,
            Some((_, t)) => w * (s * t.support() as usize + q * t.query() as usize),
        };
        let cached = self.cached_rows::<T>(images, count * corrupted_items);
        let fill = Fill {
            sampler: self,
            images,
            table,
            start,
            corrupt,
            cached,
        };
        if cached.is_none() && corrupt.is_some() {
            let done = count.saturating_mul(corrupted_items);
            self.cache.add_computed(done);
        }
        // Cached corrupted items cost what clean ones do.
        let computed_items = if cached.is_some() { 0 } else { corrupted_items };
        let work = (count * w * (s + q) * d)
            .saturating_add((count * computed_items * d).saturating_mul(CORRUPT_PIXEL_COST));
        fill.run(count, work, out);
        Ok(())
    }

    /// The argument checks of [`sample_into`](Self::sample_into).
    fn check_fill<T>(
        &self,
        images: &[u8],
        table: &PixelTable,
        start: u64,
        count: usize,
        out: &BatchOut<'_, T>,
    ) -> Result<()> {
        if Some(images.len()) != self.n_items.checked_mul(self.item_size) {
            return value_err(format!(
                "images: expected {} items of {} bytes, got {} bytes",
                self.n_items,
                self.item_size,
                images.len()
            ));
        }
        if table.channels() * table.plane() != self.item_size {
            return value_err("mean/std: channel layout does not match the images");
        }
        self.check_out(start, count, out)
    }

    /// The checks of a batch's episode range and output buffers (any element type).
    pub(super) fn check_out<T>(
        &self,
        start: u64,
        count: usize,
        out: &BatchOut<'_, T>,
    ) -> Result<()> {
        // the last episode's index, start + count - 1, must be a u64
        if count > 0 && start.checked_add(count as u64 - 1).is_none() {
            return value_err(format!(
                "start: episodes {start} .. {start} + {count} pass the last index 2**64 - 1"
            ));
        }
        let (w, s, q, d) = (self.ways, self.shots, self.queries, self.item_size);
        // Products of the counts overflow for absurd counts: checked, so that they cannot
        // wrap around to the size of a small (or empty) buffer.
        let expect = |name: &str, got: usize, factors: &[usize]| -> Result<()> {
            match checked_product(factors, "count") {
                Ok(want) if want == got => Ok(()),
                Ok(want) => value_err(format!(
                    "{name}: output buffer holds {got} values, needs {want}"
                )),
                Err(_) => value_err(format!(
                    "count: {count} episodes overflow the size of {name} ({factors:?} values)"
                )),
            }
        };
        expect("support_x", out.support_x.len(), &[count, w, s, d])?;
        expect("support_y", out.support_y.len(), &[count, w, s])?;
        expect("query_x", out.query_x.len(), &[count, w, q, d])?;
        expect("query_y", out.query_y.len(), &[count, w, q])?;
        expect("classes", out.classes.len(), &[count, w])
    }
}

/// What the episodes of one [`EpisodeSampler::sample_into`] call share.
struct Fill<'a, T> {
    sampler: &'a EpisodeSampler,
    images: &'a [u8],
    table: &'a PixelTable,
    start: u64,
    corrupt: Option<&'a (Corruption, Target)>,
    /// The corruption cache's rows, if the corrupted items are read from there.
    cached: Option<&'a CachedRows<T>>,
}

/// Scratch of one worker thread: the episode's item picks, their cache rows and the
/// corruption buffers.
struct ThreadState {
    picks: Vec<u32>,
    cache_rows: Vec<usize>,
    scratch: Scratch,
}

/// A worker's buffers for corrupting items on the fly.
struct Scratch {
    unit: Vec<f32>,
    bytes: Vec<u8>,
    workspace: Workspace,
}

impl<T: Pixel> Fill<'_, T> {
    /// Fills the episodes of `out`, on the whole pool when `work` (output bytes, corrupted
    /// pixels weighing more) pays for waking it.
    fn run(&self, count: usize, work: usize, out: BatchOut<'_, T>) {
        let sampler = self.sampler;
        let (w, s, q, d) = (
            sampler.ways,
            sampler.shots,
            sampler.queries,
            sampler.item_size,
        );
        // A query-free episode has empty query chunks; chunks_mut rejects size 0.
        let qchunk = (w * q * d).max(1);
        let qychunk = (w * q).max(1);
        let mut qx_holder: Vec<T> = Vec::new();
        let mut qy_holder: Vec<i64> = Vec::new();
        let (qx_all, qy_all): (&mut [T], &mut [i64]) = if q == 0 {
            qx_holder.resize(count, out.support_x[0]);
            qy_holder.resize(count, 0);
            (&mut qx_holder[..], &mut qy_holder[..])
        } else {
            (out.query_x, out.query_y)
        };
        // Copies are cheap per byte (corrupted pixels weigh more): a few episodes already pay
        // for waking the pool.
        pool::install_if(count > 1 && work >= PARALLEL_MIN_BYTES, |par| {
            if !par {
                let mut state = self.new_state();
                let chunks = out
                    .support_x
                    .chunks_mut(w * s * d)
                    .zip(out.support_y.chunks_mut(w * s))
                    .zip(qx_all.chunks_mut(qchunk).zip(qy_all.chunks_mut(qychunk)))
                    .zip(out.classes.chunks_mut(w));
                for (j, (((sx, sy), (qx, qy)), cl)) in chunks.enumerate() {
                    let (qx, qy) = if q == 0 {
                        (&mut qx[..0], &mut qy[..0])
                    } else {
                        (qx, qy)
                    };
                    self.episode(j, sx, sy, qx, qy, cl, &mut state);
                }
                return;
            }
            (
                out.support_x.par_chunks_mut(w * s * d),
                out.support_y.par_chunks_mut(w * s),
                qx_all.par_chunks_mut(qchunk),
                qy_all.par_chunks_mut(qychunk),
                out.classes.par_chunks_mut(w),
            )
                .into_par_iter()
                .enumerate()
                .for_each_init(
                    || self.new_state(),
                    |state, (j, (sx, sy, qx, qy, cl))| {
                        let (qx, qy) = if q == 0 {
                            (&mut qx[..0], &mut qy[..0])
                        } else {
                            (qx, qy)
                        };
                        self.episode(j, sx, sy, qx, qy, cl, state)
                    },
                );
        });
    }

    fn new_state(&self) -> ThreadState {
        let sampler = self.sampler;
        let (w, s, q, d) = (
            sampler.ways,
            sampler.shots,
            sampler.queries,
            sampler.item_size,
        );
        let corrupt = self.corrupt.is_some();
        ThreadState {
            picks: Vec::with_capacity(w * (s + q)),
            cache_rows: Vec::with_capacity(if self.cached.is_some() {
                w * (s + q)
            } else {
                0
            }),
            scratch: Scratch {
                unit: vec![0.0; if corrupt { d } else { 0 }],
                bytes: vec![0; if corrupt { d } else { 0 }],
                workspace: Workspace::default(),
            },
        }
    }

    /// Item `k` of way `way`: its position in the episode, and whether it is corrupted.
    #[inline(always)]
    fn position(&self, way: usize, k: usize) -> (usize, bool) {
        let (w, s, q) = (self.sampler.ways, self.sampler.shots, self.sampler.queries);
        let hit = |t: &Target| if k < s { t.support() } else { t.query() };
        let pos = if k < s {
            way * s + k
        } else {
            w * s + way * q + (k - s)
        };
        (pos, self.corrupt.is_some_and(|(_, t)| hit(t)))
    }

    /// Writes episode `start + j` into its parts of the outputs.
    #[allow(clippy::too_many_arguments)]
    fn episode(
        &self,
        j: usize,
        sx: &mut [T],
        sy: &mut [i64],
        qx: &mut [T],
        qy: &mut [i64],
        cl: &mut [i64],
        state: &mut ThreadState,
    ) {
        let sampler = self.sampler;
        let (w, s, q, d) = (
            sampler.ways,
            sampler.shots,
            sampler.queries,
            sampler.item_size,
        );
        let episode = self.start + j as u64;
        let picks = &mut state.picks;
        sampler.draw(episode, cl, picks);
        let key = self.corrupt.map(|_| StreamKey::new(sampler.seed, episode));
        // Each cached corrupted item's cache row (NOT_CACHED for the others), found once
        // for the prefetch and the copy.
        let rows_of = &mut state.cache_rows;
        rows_of.clear();
        if let (Some(rows), Some((c, _)), Some(key)) = (self.cached, self.corrupt, &key) {
            rows_of.extend(picks.iter().enumerate().map(|(i, &item)| {
                match self.position(i / (s + q), i % (s + q)) {
                    (pos, true) => rows.row(item, c.variant_of(key, pos as u64)),
                    _ => NOT_CACHED,
                }
            }));
        }
        let cache_row = |i: usize| rows_of.get(i).copied().filter(|&r| r != NOT_CACHED);
        for way in 0..w {
            let mine = &picks[way * (s + q)..(way + 1) * (s + q)];
            for (k, &item) in mine.iter().enumerate() {
                // Items are scattered over the dataset (or the cache): ask for one a few
                // ahead now, so its cache misses overlap this copy.
                let next = way * (s + q) + k + PREFETCH_AHEAD;
                if let Some(&ahead) = picks.get(next) {
                    match (self.cached, cache_row(next)) {
                        (Some(rows), Some(r)) => rows.prefetch(r),
                        _ => prefetch::<false>(self.images[ahead as usize * d..].as_ptr(), d),
                    }
                }
                let src = &self.images[item as usize * d..(item as usize + 1) * d];
                let (pos, hit) = self.position(way, k);
                let dst = if k < s {
                    sy[pos] = way as i64;
                    &mut sx[pos * d..(pos + 1) * d]
                } else {
                    let slot = pos - w * s;
                    qy[slot] = way as i64;
                    &mut qx[slot * d..(slot + 1) * d]
                };
                match (self.corrupt, &key) {
                    (Some((c, _)), Some(key)) if hit => {
                        let row = cache_row(way * (s + q) + k);
                        let scratch = &mut state.scratch;
                        self.corrupted(c, (key, pos as u64), src, dst, row, scratch);
                    }
                    _ => T::convert(src, dst, self.table),
                }
            }
        }
    }

    /// Writes the corruption of `src`, item `item` of stream `key`, into `dst`: its cache
    /// row `row` where the cache is used, else computed, on bytes where the corruption can.
    #[inline(always)]
    fn corrupted(
        &self,
        c: &Corruption,
        (key, item): (&StreamKey, u64),
        src: &[u8],
        dst: &mut [T],
        row: Option<usize>,
        scratch: &mut Scratch,
    ) {
        let (d, table) = (src.len(), self.table);
        match self.cached {
            Some(rows) => rows.read(row.expect("a cached item"), dst, table),
            None if corrupt_bytes(c, src, dst, &mut scratch.bytes[..d], (key, item), table) => {}
            None => {
                // The output is only written at the end: fetch it meanwhile
                // (the clean copy has no work for a fetch to overlap).
                prefetch::<true>(dst.as_ptr() as *const u8, size_of_val(dst));
                let load = |unit: &mut [f32]| u8::load(src, unit);
                let store = |unit: &mut [f32]| T::from_unit(unit, dst, table);
                let (unit, ws) = (&mut scratch.unit[..d], &mut scratch.workspace);
                c.apply_fused(unit, load, store, key, item, ws);
            }
        }
    }
}

/// Corrupts item `item` of stream `key` from the bytes `src` into `dst` where the corruption
/// can work on bytes ([`Corruption::apply_bytes`], the same values): straight into byte
/// output, through `scratch` and the clean conversion for float output. False, writing
/// nothing, where it cannot.
#[inline(always)]
fn corrupt_bytes<T: Pixel>(
    c: &Corruption,
    src: &[u8],
    dst: &mut [T],
    scratch: &mut [u8],
    (key, item): (&StreamKey, u64),
    table: &PixelTable,
) -> bool {
    if let Some(dst) = T::bytes_mut(dst) {
        // The output is bytes already: no scratch copy.
        return c.apply_bytes(src, dst, key, item);
    }
    let done = c.apply_bytes(src, scratch, key, item);
    if done {
        T::convert(scratch, dst, table);
    }
    done
}
