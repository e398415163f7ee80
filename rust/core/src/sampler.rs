//! N-way K-shot episode sampling with counter-based randomness.
//!
//! Episode `i` draws from ChaCha8 keyed by `seed` on stream `i`, so it is a pure function of
//! `(seed, i)`: batches can be split any way and filled by any number of threads.
//! The dataset is borrowed as a flat `&[u8]` of `n_items * item_size` bytes, never copied.
//!
//! With a corruption ([`EpisodeSampler::with_corruption`]), the chosen items are corrupted in
//! the same pass: item `j` of episode `i` (`j` counts the support items, then the queries)
//! gets the randomness of `corruptions::item_rng(seed, i, j)` (the stream key drawn once per
//! episode), and the corruption runs on `[0, 1]` floats before the output conversion.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use crate::cache::{CachedRows, CorruptionCache, DEFAULT_CACHE_BYTES};
use crate::corruptions::{
    byte_to_unit, clamp, Corruption, Kind, StreamKey, Target, Unit, Workspace,
};
use crate::error::{checked_product, value_err, Error, Result};
use crate::pool;

/// Batches of at least this many output bytes are filled by the whole pool.
pub(crate) const PARALLEL_MIN_BYTES: usize = 1 << 18;

/// How many items ahead of the copy the sampler prefetches.
const PREFETCH_AHEAD: usize = 4;

/// A corrupted pixel counts as this many copied bytes when deciding to go parallel.
pub(crate) const CORRUPT_PIXEL_COST: usize = 16;

/// `ThreadState::cache_rows` of an item not read from the cache.
const NOT_CACHED: usize = usize::MAX;

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

/// The generator of episode `episode` under `seed`.
pub fn episode_rng(seed: u64, episode: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(episode);
    rng
}

/// Episode shape and the class index built from the labels.
#[derive(Debug, Clone)]
pub struct EpisodeSampler {
    ways: usize,
    shots: usize,
    queries: usize,
    seed: u64,
    n_items: usize,
    item_size: usize,
    /// Dataset class id of each eligible class, ascending.
    class_ids: Vec<i64>,
    /// `items[offsets[c]..offsets[c + 1]]`: item indices of eligible class `c`, ascending.
    offsets: Vec<usize>,
    items: Vec<u32>,
    corruption: Option<(Corruption, Target)>,
    /// Shared by clones, which sample the same episodes.
    cache: Arc<CorruptionCache>,
}

/// Pixel output type: raw bytes or float32 through a per-channel lookup table.
pub trait Pixel: Copy + Default + Send + Sync + 'static {
    fn convert(src: &[u8], dst: &mut [Self], table: &PixelTable);
    /// Output of a corrupted item, from its floats clamped to `[0, 1]` here.
    fn from_unit(src: &[f32], dst: &mut [Self], table: &PixelTable);
    /// A corrupted item's floats (unclamped) as a [`CorruptionCache`] row.
    fn to_cached(src: &[f32], dst: &mut [Self]);
    /// The output from a cache row: the same values as `from_unit` on the item's floats.
    fn from_cached(src: &[Self], dst: &mut [Self], table: &PixelTable);
    /// Cache rows of this type as floats, if they are floats.
    fn floats(values: &[Self]) -> Option<&[f32]>;
    /// Sets output pixel `pixel` (of `dst`, one item) from its `[0, 1]` float `value`, as
    /// `from_unit` would.
    fn patch(dst: &mut [Self], pixel: usize, value: f32, table: &PixelTable);
    /// This type's cache.
    fn cached_rows(cache: &CorruptionCache) -> &OnceLock<CachedRows<Self>>;
    /// Corrupts item `item` of stream `key` from the bytes `src` into `dst` where the
    /// corruption can work on bytes ([`Corruption::apply_bytes`], the same values), through
    /// `scratch`, then converts as a clean item; false, writing nothing, where it cannot.
    #[inline(always)]
    fn corrupt_bytes(
        c: &Corruption,
        src: &[u8],
        dst: &mut [Self],
        scratch: &mut [u8],
        (key, item): (&StreamKey, u64),
        table: &PixelTable,
    ) -> bool {
        let done = c.apply_bytes(src, scratch, key, item);
        if done {
            Self::convert(scratch, dst, table);
        }
        done
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
        }
        let identity = mean.iter().all(|&m| m == 0.0) && std.iter().all(|&s| s == 1.0);
        Ok(Self {
            plane,
            mean,
            std,
            identity,
        })
    }

    fn channels(&self) -> usize {
        self.mean.len()
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

impl Pixel for u8 {
    fn convert(src: &[u8], dst: &mut [u8], _: &PixelTable) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn from_unit(src: &[f32], dst: &mut [u8], _: &PixelTable) {
        crate::corruptions::unit_to_u8(src, dst);
    }
    fn to_cached(src: &[f32], dst: &mut [u8]) {
        crate::corruptions::unit_to_u8(src, dst);
    }
    fn from_cached(src: &[u8], dst: &mut [u8], _: &PixelTable) {
        dst.copy_from_slice(src);
    }
    fn floats(_: &[u8]) -> Option<&[f32]> {
        None
    }
    fn patch(dst: &mut [u8], pixel: usize, value: f32, _: &PixelTable) {
        crate::corruptions::unit_to_u8(&[value], &mut dst[pixel..pixel + 1]);
    }
    fn cached_rows(cache: &CorruptionCache) -> &OnceLock<CachedRows<u8>> {
        &cache.u8_rows
    }
    #[inline(always)]
    fn corrupt_bytes(
        c: &Corruption,
        src: &[u8],
        dst: &mut [u8],
        _: &mut [u8],
        (key, item): (&StreamKey, u64),
        _: &PixelTable,
    ) -> bool {
        // The output is bytes already: no scratch copy.
        c.apply_bytes(src, dst, key, item)
    }
}

impl Pixel for f32 {
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
    fn to_cached(src: &[f32], dst: &mut [f32]) {
        f32::store(src, dst);
    }
    fn from_cached(src: &[f32], dst: &mut [f32], table: &PixelTable) {
        if table.identity {
            // Already clamped.
            return dst.copy_from_slice(src);
        }
        Self::from_unit(src, dst, table)
    }
    fn floats(values: &[f32]) -> Option<&[f32]> {
        Some(values)
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
    fn cached_rows(cache: &CorruptionCache) -> &OnceLock<CachedRows<f32>> {
        &cache.f32_rows
    }
}

/// Output buffers of a batch of `count` episodes (shapes in the field docs).
pub struct BatchOut<'a, T> {
    /// `(count, ways * shots, item_size)`
    pub support_x: &'a mut [T],
    /// `(count, ways * shots)`
    pub support_y: &'a mut [i64],
    /// `(count, ways * queries, item_size)`
    pub query_x: &'a mut [T],
    /// `(count, ways * queries)`
    pub query_y: &'a mut [i64],
    /// `(count, ways)`
    pub classes: &'a mut [i64],
}

impl EpisodeSampler {
    /// Builds the class index. `classes` restricts sampling to those dataset classes
    /// (a split); `None` uses every class present in `labels`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        labels: &[i64],
        item_size: usize,
        ways: usize,
        shots: usize,
        queries: usize,
        seed: u64,
        classes: Option<&[i64]>,
    ) -> Result<Self> {
        if ways == 0 {
            return value_err("ways: must be >= 1, got 0");
        }
        if shots == 0 {
            return value_err("shots: must be >= 1, got 0");
        }
        if item_size == 0 {
            return value_err("images: each image must hold at least one pixel");
        }
        if labels.is_empty() {
            return value_err("labels: the dataset is empty");
        }
        if labels.len() > u32::MAX as usize {
            return value_err(format!(
                "labels: at most {} items are supported, got {}",
                u32::MAX,
                labels.len()
            ));
        }
        let per_class = shots
            .checked_add(queries)
            .ok_or_else(|| Error::Value("shots + queries: overflows".into()))?;
        checked_product(
            &[ways, per_class, item_size],
            "ways * (shots + queries) * image size",
        )?;
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
            return value_err(format!("labels: must be >= 0, got {l} at index {i}"));
        }
        // Items grouped by class (ascending), each class's items in dataset order. Sorting
        // rather than tables indexed by label: labels may be large and sparse.
        let mut by_class: Vec<u32> = (0..labels.len() as u32).collect();
        by_class.sort_by_key(|&i| labels[i as usize]); // stable: dataset order within a class
        let mut present: Vec<(i64, Range<usize>)> = Vec::new();
        for (k, &i) in by_class.iter().enumerate() {
            match present.last_mut() {
                Some((c, range)) if *c == labels[i as usize] => range.end = k + 1,
                _ => present.push((labels[i as usize], k..k + 1)),
            }
        }
        let members = |c: i64| {
            present
                .binary_search_by_key(&c, |(id, _)| *id)
                .ok()
                .map(|at| present[at].1.clone())
        };
        let class_ids: Vec<i64> = match classes {
            None => present.iter().map(|(c, _)| *c).collect(),
            Some(list) => {
                if list.is_empty() {
                    return value_err("classes: must name at least one class, got none");
                }
                let mut v = list.to_vec();
                v.sort_unstable();
                if let Some(w) = v.windows(2).find(|w| w[0] == w[1]) {
                    return value_err(format!("classes: class {} is listed twice", w[0]));
                }
                if let Some(&c) = v.iter().find(|&&c| members(c).is_none()) {
                    let (lo, hi) = (present[0].0, present[present.len() - 1].0);
                    return value_err(format!(
                        "classes: class {c} has no items in the dataset (labels hold \
                         {} classes in {lo}..={hi})",
                        present.len()
                    ));
                }
                v
            }
        };
        if ways > class_ids.len() {
            return value_err(format!(
                "ways: {ways} is more than the {} classes available",
                class_ids.len()
            ));
        }
        let ranges: Vec<Range<usize>> = class_ids
            .iter()
            .map(|&c| members(c).expect("a present class"))
            .collect();
        let (smallest, smallest_n) = class_ids
            .iter()
            .zip(&ranges)
            .map(|(&c, r)| (c, r.len()))
            .min_by_key(|&(c, n)| (n, c))
            .expect("non-empty");
        if per_class > smallest_n {
            return value_err(format!(
                "shots + queries: {shots} + {queries} = {per_class} is more than the \
                 {smallest_n} items of class {smallest}, the smallest class"
            ));
        }
        let mut offsets = Vec::with_capacity(class_ids.len() + 1);
        offsets.push(0);
        let mut items = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
        for r in ranges {
            items.extend_from_slice(&by_class[r]);
            offsets.push(items.len());
        }
        Ok(Self {
            ways,
            shots,
            queries,
            seed,
            n_items: labels.len(),
            item_size,
            class_ids,
            offsets,
            items,
            corruption: None,
            cache: Arc::new(CorruptionCache::new(DEFAULT_CACHE_BYTES)),
        })
    }

    /// The same sampler, corrupting the `target` items of every episode with `corruption`.
    pub fn with_corruption(mut self, corruption: Corruption, target: Target) -> Result<Self> {
        if corruption.item_size() != self.item_size {
            return value_err(format!(
                "corruption: made for images of {:?} ({} values), the dataset's hold {}",
                corruption.shape(),
                corruption.item_size(),
                self.item_size
            ));
        }
        self.corruption = Some((corruption, target));
        self.cache = Arc::new(CorruptionCache::new(self.cache.budget()));
        Ok(self)
    }

    /// The same sampler with at most `bytes` of memory for caching the corruption's results
    /// ([`CorruptionCache`]; 0 turns caching off). Default [`DEFAULT_CACHE_BYTES`].
    pub fn with_cache_budget(mut self, bytes: usize) -> Self {
        self.cache = Arc::new(CorruptionCache::new(bytes));
        self
    }

    /// Whether the cache for output type `T` is built.
    pub fn cache_built<T: Pixel>(&self) -> bool {
        self.cache.built::<T>()
    }

    /// The cache rows for output type `T` to use in a fill of `images` that corrupts
    /// `corrupted` items: built now if that brings the items corrupted so far up to the
    /// cache's size (and it fits the budget), `None` if there is none to use.
    fn cached_rows<T: Pixel>(&self, images: &[u8], corrupted: usize) -> Option<&CachedRows<T>> {
        let (c, _) = self.corruption.as_ref()?;
        let variants = c.variants()?;
        if c.kind() == Kind::Contrast && std::mem::size_of::<T>() > 1 {
            // One cheap pass over the pixels: a float row read from the cache costs as much
            // (measured), so only byte output caches it.
            return None;
        }
        self.cache.rows(c, variants, &self.items, images, corrupted)
    }

    /// The corruption and the items it applies to, if any.
    pub fn corruption(&self) -> Option<&(Corruption, Target)> {
        self.corruption.as_ref()
    }

    pub fn ways(&self) -> usize {
        self.ways
    }
    pub fn shots(&self) -> usize {
        self.shots
    }
    pub fn queries(&self) -> usize {
        self.queries
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn item_size(&self) -> usize {
        self.item_size
    }
    pub fn n_items(&self) -> usize {
        self.n_items
    }
    /// Dataset class ids that episodes draw from.
    pub fn class_ids(&self) -> &[i64] {
        &self.class_ids
    }

    /// Draws episode `episode`: the dataset class of each way, and for each way
    /// `shots` support then `queries` query item indices (all distinct).
    pub fn draw(&self, episode: u64, classes: &mut [i64], picks: &mut Vec<u32>) {
        let mut rng = episode_rng(self.seed, episode);
        let per_class = self.shots + self.queries;
        picks.clear();
        let chosen = index::sample(&mut rng, self.class_ids.len(), self.ways);
        for (way, c) in chosen.iter().enumerate() {
            classes[way] = self.class_ids[c];
            let members = &self.items[self.offsets[c]..self.offsets[c + 1]];
            let mut taken = index::sample(&mut rng, members.len(), per_class).into_vec();
            // index::sample does not promise a random order; the support/query split needs one.
            taken.shuffle(&mut rng);
            picks.extend(taken.iter().map(|&k| members[k]));
        }
    }

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
        if images.len() != self.n_items * self.item_size {
            return value_err(format!(
                "images: expected {} bytes ({} items of {}), got {}",
                self.n_items * self.item_size,
                self.n_items,
                self.item_size,
                images.len()
            ));
        }
        if table.channels() * table.plane != self.item_size {
            return value_err("mean/std: channel layout does not match the images");
        }
        if start.checked_add(count as u64).is_none() {
            return value_err(format!("start: {start} + count {count} overflows"));
        }
        let (w, s, q, d) = (self.ways, self.shots, self.queries, self.item_size);
        let expect = |name: &str, got: usize, want: usize| -> Result<()> {
            if got == want {
                Ok(())
            } else {
                value_err(format!(
                    "{name}: output buffer holds {got} values, needs {want}"
                ))
            }
        };
        expect("support_x", out.support_x.len(), count * w * s * d)?;
        expect("support_y", out.support_y.len(), count * w * s)?;
        expect("query_x", out.query_x.len(), count * w * q * d)?;
        expect("query_y", out.query_y.len(), count * w * q)?;
        expect("classes", out.classes.len(), count * w)?;
        if count == 0 {
            return Ok(());
        }
        let corrupt = self.corruption.as_ref();
        let corrupted_items = match corrupt {
            None => 0,
            Some((_, t)) => w * (s * t.support() as usize + q * t.query() as usize),
        };
        let cached = self.cached_rows::<T>(images, count * corrupted_items);
        // Item `k` of way `way`: its position in the episode, and whether it is corrupted.
        let position = |way: usize, k: usize| -> (usize, bool) {
            let hit = |t: &Target| if k < s { t.support() } else { t.query() };
            let pos = if k < s {
                way * s + k
            } else {
                w * s + way * q + (k - s)
            };
            (pos, corrupt.is_some_and(|(_, t)| hit(t)))
        };
        let fill_one = |j: usize,
                        sx: &mut [T],
                        sy: &mut [i64],
                        qx: &mut [T],
                        qy: &mut [i64],
                        cl: &mut [i64],
                        state: &mut ThreadState| {
            let episode = start + j as u64;
            let picks = &mut state.picks;
            self.draw(episode, cl, picks);
            let key = corrupt.map(|_| StreamKey::new(self.seed, episode));
            // Each cached corrupted item's cache row (NOT_CACHED for the others), found once
            // for the prefetch and the copy.
            let rows_of = &mut state.cache_rows;
            rows_of.clear();
            if let (Some(rows), Some((c, _)), Some(key)) = (cached, corrupt, &key) {
                rows_of.extend(picks.iter().enumerate().map(|(i, &item)| {
                    match position(i / (s + q), i % (s + q)) {
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
                        match (cached, cache_row(next)) {
                            (Some(rows), Some(r)) => rows.prefetch(r),
                            _ => prefetch::<false>(images[ahead as usize * d..].as_ptr(), d),
                        }
                    }
                    let src = &images[item as usize * d..(item as usize + 1) * d];
                    let (pos, hit) = position(way, k);
                    let dst = if k < s {
                        sy[pos] = way as i64;
                        &mut sx[pos * d..(pos + 1) * d]
                    } else {
                        let slot = pos - w * s;
                        qy[slot] = way as i64;
                        &mut qx[slot * d..(slot + 1) * d]
                    };
                    match (corrupt, &key) {
                        (Some((c, _)), Some(key)) if hit => match cached {
                            Some(rows) => {
                                let r = cache_row(way * (s + q) + k).expect("a cached item");
                                rows.read(r, dst, table);
                            }
                            None if T::corrupt_bytes(
                                c,
                                src,
                                dst,
                                &mut state.bytes[..d],
                                (key, pos as u64),
                                table,
                            ) => {}
                            None => {
                                // The output is only written at the end: fetch it meanwhile
                                // (the clean copy has no work for a fetch to overlap).
                                prefetch::<true>(dst.as_ptr() as *const u8, size_of_val(dst));
                                let load = |unit: &mut [f32]| u8::load(src, unit);
                                let store = |unit: &mut [f32]| T::from_unit(unit, dst, table);
                                let (unit, ws) = (&mut state.unit[..d], &mut state.workspace);
                                c.apply_fused(unit, load, store, key, pos as u64, ws);
                            }
                        },
                        _ => T::convert(src, dst, table),
                    }
                }
            }
        };
        let new_state = || ThreadState {
            picks: Vec::with_capacity(w * (s + q)),
            cache_rows: Vec::with_capacity(if cached.is_some() { w * (s + q) } else { 0 }),
            unit: vec![0.0; if corrupt.is_some() { d } else { 0 }],
            bytes: vec![0; if corrupt.is_some() { d } else { 0 }],
            workspace: Workspace::default(),
        };
        if cached.is_none() && corrupt.is_some() {
            let done = count.saturating_mul(corrupted_items);
            self.cache.add_computed(done);
        }
        // Cached corrupted items cost what clean ones do.
        let computed_items = if cached.is_some() { 0 } else { corrupted_items };
        let work = (count * w * (s + q) * d)
            .saturating_add((count * computed_items * d).saturating_mul(CORRUPT_PIXEL_COST));
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
                let mut state = new_state();
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
                    fill_one(j, sx, sy, qx, qy, cl, &mut state);
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
                .for_each_init(new_state, |state, (j, (sx, sy, qx, qy, cl))| {
                    let (qx, qy) = if q == 0 {
                        (&mut qx[..0], &mut qy[..0])
                    } else {
                        (qx, qy)
                    };
                    fill_one(j, sx, sy, qx, qy, cl, state)
                });
        });
        Ok(())
    }
}

/// Scratch of one worker thread: the episode's item picks, their cache rows and the
/// corruption buffers.
struct ThreadState {
    picks: Vec<u32>,
    cache_rows: Vec<usize>,
    unit: Vec<f32>,
    bytes: Vec<u8>,
    workspace: Workspace,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n_classes: usize, per: usize, d: usize) -> (Vec<u8>, Vec<i64>) {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n_classes * per {
            labels.push((i % n_classes) as i64);
            images.extend(std::iter::repeat_n((i % 251) as u8, d));
        }
        (images, labels)
    }

    type Outputs = (Vec<u8>, Vec<i64>, Vec<u8>, Vec<i64>, Vec<i64>);

    fn run(s: &EpisodeSampler, images: &[u8], start: u64, count: usize) -> Outputs {
        let (w, k, q, d) = (s.ways, s.shots, s.queries, s.item_size);
        let mut sx = vec![0u8; count * w * k * d];
        let mut sy = vec![0i64; count * w * k];
        let mut qx = vec![0u8; count * w * q * d];
        let mut qy = vec![0i64; count * w * q];
        let mut cl = vec![0i64; count * w];
        let table = PixelTable::new(1, d, &[], &[]).unwrap();
        s.sample_into(
            images,
            &table,
            start,
            count,
            BatchOut {
                support_x: &mut sx,
                support_y: &mut sy,
                query_x: &mut qx,
                query_y: &mut qy,
                classes: &mut cl,
            },
        )
        .unwrap();
        (sx, sy, qx, qy, cl)
    }

    #[test]
    fn episodes_are_valid_and_split_independent() {
        let (images, labels) = toy(12, 7, 3);
        let s = EpisodeSampler::new(&labels, 3, 5, 2, 3, 42, None).unwrap();
        let whole = run(&s, &images, 10, 6);
        let a = run(&s, &images, 10, 2);
        let b = run(&s, &images, 12, 4);
        assert_eq!([a.0, b.0].concat(), whole.0);
        assert_eq!([a.4, b.4].concat(), whole.4);
        for j in 0..6 {
            let cl = &whole.4[j * 5..(j + 1) * 5];
            let mut sorted = cl.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 5, "ways are distinct");
            let mut picks = Vec::new();
            let mut cls = vec![0; 5];
            s.draw(10 + j as u64, &mut cls, &mut picks);
            assert_eq!(cls, cl);
            for way in 0..5 {
                let mine = &picks[way * 5..(way + 1) * 5];
                let mut u = mine.to_vec();
                u.sort();
                u.dedup();
                assert_eq!(u.len(), 5, "items are distinct");
                assert!(mine.iter().all(|&i| labels[i as usize] == cl[way]));
            }
        }
    }

    #[test]
    fn sparse_labels_sample_as_their_ranks() {
        // Class ids far apart (up to 2^62) cost nothing: the same episodes as the dense
        // ids 0..n, with the classes reported as given; likewise with a class subset.
        let (images, dense) = toy(12, 7, 3);
        let id = |c: i64| c * c * (1 << 50) + c;
        let sparse: Vec<i64> = dense.iter().map(|&c| id(c)).collect();
        let subset = [1i64, 4, 5, 9, 11];
        let subset_ids: Vec<i64> = subset.iter().rev().map(|&c| id(c)).collect();
        for (want, got) in [
            (None, None),
            (Some(subset.as_slice()), Some(subset_ids.as_slice())),
        ] {
            let a = EpisodeSampler::new(&dense, 3, 4, 2, 3, 7, want).unwrap();
            let b = EpisodeSampler::new(&sparse, 3, 4, 2, 3, 7, got).unwrap();
            let (ra, rb) = (run(&a, &images, 5, 6), run(&b, &images, 5, 6));
            assert_eq!((&ra.0, &ra.1, &ra.2, &ra.3), (&rb.0, &rb.1, &rb.2, &rb.3));
            assert_eq!(ra.4.iter().map(|&c| id(c)).collect::<Vec<_>>(), rb.4);
        }
        let err = EpisodeSampler::new(&sparse, 3, 4, 2, 3, 7, Some(&[id(3) + 1]));
        let msg = format!("{}", err.expect_err("an absent class"));
        assert!(
            msg.contains("has no items") && msg.contains("12 classes in 0..="),
            "{msg}"
        );
    }

    #[test]
    fn corrupted_items_match_the_corruption_of_clean_items() {
        use crate::corruptions::{unit_to_u8, Unit};
        let (images, labels) = toy(12, 7, 16);
        let clean = EpisodeSampler::new(&labels, 16, 5, 2, 3, 42, None).unwrap();
        for (name, target) in [
            ("gaussian_noise", Target::Query),
            ("rotate", Target::Support),
            ("thicken", Target::Both),
        ] {
            let c = Corruption::new(name, 3, "dark", [1, 4, 4]).unwrap();
            let s = clean.clone().with_corruption(c.clone(), target).unwrap();
            let base = run(&clean, &images, 3, 6);
            let whole = run(&s, &images, 3, 6);
            let a = run(&s, &images, 3, 2);
            let b = run(&s, &images, 5, 4);
            assert_eq!([a.0, b.0].concat(), whole.0, "{name}: split invariance");
            assert_eq!([a.2, b.2].concat(), whole.2, "{name}: split invariance");
            assert_eq!((&base.1, &base.3, &base.4), (&whole.1, &whole.3, &whole.4));
            let (ns, nq) = (5 * 2, 5 * 3);
            for j in 0..6 {
                let items = base.0[j * ns * 16..(j + 1) * ns * 16]
                    .chunks(16)
                    .chain(base.2[j * nq * 16..(j + 1) * nq * 16].chunks(16));
                let got = whole.0[j * ns * 16..(j + 1) * ns * 16]
                    .chunks(16)
                    .chain(whole.2[j * nq * 16..(j + 1) * nq * 16].chunks(16));
                for (pos, (src, got)) in items.zip(got).enumerate() {
                    let hit = if pos < ns {
                        target.support()
                    } else {
                        target.query()
                    };
                    if !hit {
                        assert_eq!(src, got);
                        continue;
                    }
                    let mut unit = vec![0f32; 16];
                    u8::load(src, &mut unit);
                    let mut ws = Workspace::default();
                    let key = StreamKey::new(42, 3 + j as u64);
                    c.apply(&mut unit, &key, pos as u64, &mut ws).unwrap();
                    let mut want = vec![0u8; 16];
                    unit_to_u8(&unit, &mut want);
                    assert_eq!(want, got, "{name} episode {j} item {pos}");
                }
            }
        }
        let wrong = Corruption::new("rotate", 1, "dark", [1, 3, 3]).unwrap();
        assert!(clean.with_corruption(wrong, Target::Query).is_err());
    }

    /// Episodes `start..start + count` with outputs of type `T` through `table`.
    fn run_as<T: Pixel>(
        s: &EpisodeSampler,
        images: &[u8],
        table: &PixelTable,
        start: u64,
        count: usize,
    ) -> (Vec<T>, Vec<T>) {
        let (w, k, q, d) = (s.ways, s.shots, s.queries, s.item_size);
        let mut sx = vec![T::default(); count * w * k * d];
        let mut qx = vec![T::default(); count * w * q * d];
        let out = BatchOut {
            support_x: &mut sx,
            support_y: &mut vec![0; count * w * k],
            query_x: &mut qx,
            query_y: &mut vec![0; count * w * q],
            classes: &mut vec![0; count * w],
        };
        s.sample_into(images, table, start, count, out).unwrap();
        (sx, qx)
    }

    #[test]
    fn cached_corruptions_give_the_computed_bits() {
        let mut compact = Vec::new();
        for glyphs in [false, true] {
            compact.extend(check_cache(glyphs));
        }
        // Both layouts were read back: noisy images keep float rows, glyph-like ones
        // (white stays 1.0) mostly become bytes.
        assert!(compact.iter().any(|&(c, _)| !c), "{compact:?}");
        assert!(
            compact.iter().any(|&(c, glyphs)| c && glyphs),
            "{compact:?}"
        );
    }

    /// Checks every cached corruption against the computed one, on noisy images or on
    /// glyph-like ones (dark noisy strokes on white); returns, per float cache built,
    /// whether its rows were compact and whether the images were glyph-like.
    fn check_cache(glyphs: bool) -> Vec<(bool, bool)> {
        let mut layouts = Vec::new();
        let (n_classes, per, side) = (9, 6, if glyphs { 12 } else { 7 });
        let d = side * side;
        let mut rng = episode_rng(5, 0);
        let labels: Vec<i64> = (0..n_classes * per)
            .map(|i| (i % n_classes) as i64)
            .collect();
        let images: Vec<u8> = (0..labels.len() * d)
            .map(|p| {
                let (y, x) = ((p % d) / side, p % side);
                let stroke = (2..5).contains(&y) && (1..4).contains(&x);
                let noise = rand::Rng::random_range(&mut rng, 0..56u32) as u8;
                match (glyphs, stroke) {
                    (false, true) => 200 + noise,
                    (false, false) => noise,
                    (true, true) => noise,
                    (true, false) => 255,
                }
            })
            .collect();
        let base = EpisodeSampler::new(&labels, d, 3, 2, 2, 11, Some(&[0, 2, 3, 5, 8])).unwrap();
        let tables = [
            PixelTable::new(1, d, &[], &[]).unwrap(),
            PixelTable::new(1, d, &[0.25], &[0.5]).unwrap(),
        ];
        let n_rows = 5 * per; // eligible images
        for name in [
            "gaussian_blur",
            "thicken",
            "thin",
            "contrast",
            "rotate",
            "shear",
        ] {
            for target in [Target::Query, Target::Both] {
                let c = Corruption::new(name, 4, "dark", [1, side, side]).unwrap();
                let variants = c.variants().unwrap();
                let plain = base.clone().with_cache_budget(0);
                let plain = plain.with_corruption(c.clone(), target).unwrap();
                let cached = base.clone().with_corruption(c, target).unwrap();
                // Each fill corrupts 6 (queries) or 12 (both) items.
                let fills_to_build =
                    (n_rows * variants).div_ceil(if target.support() { 12 } else { 6 });
                let want_u8 = run_as::<u8>(&plain, &images, &tables[0], 0, 40);
                for e in 0..40 {
                    let got = run_as::<u8>(&cached, &images, &tables[0], e as u64, 1);
                    let per_ep = |v: &[u8], n| v[e * n * d..(e + 1) * n * d].to_vec();
                    assert_eq!(got.0, per_ep(&want_u8.0, 6), "{name} {target:?} ep {e}");
                    assert_eq!(got.1, per_ep(&want_u8.1, 6), "{name} {target:?} ep {e}");
                    assert_eq!(
                        cached.cache_built::<u8>(),
                        e + 1 >= fills_to_build,
                        "{name}"
                    );
                }
                assert!(!plain.cache_built::<u8>() && !cached.cache_built::<f32>());
                for table in &tables {
                    let want = run_as::<f32>(&plain, &images, table, 7, 30);
                    // One fill big enough to build the float cache at once.
                    let got = run_as::<f32>(&cached, &images, table, 7, 30);
                    assert_eq!(cached.cache_built::<f32>(), name != "contrast", "{name}");
                    if let Some(rows) = cached.cache.f32_rows.get() {
                        layouts.push((rows.is_compact(), glyphs));
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got.0), bits(&want.0), "{name} {target:?}");
                    assert_eq!(bits(&got.1), bits(&want.1), "{name} {target:?}");
                }
                // Other images (another address) are computed, not read from the cache.
                let other: Vec<u8> = images.iter().map(|v| 255 - v).collect();
                let want = run_as::<u8>(&plain, &other, &tables[0], 0, 4);
                assert_eq!(run_as::<u8>(&cached, &other, &tables[0], 0, 4), want);
            }
        }
        // Too large for the budget, or without a finite set of results: never cached.
        let c = Corruption::new("rotate", 1, "dark", [1, side, side]).unwrap();
        let small = base.clone().with_cache_budget(2 * n_rows * d - 1);
        let small = small.with_corruption(c, Target::Both).unwrap();
        let c = Corruption::new("gaussian_noise", 1, "dark", [1, side, side]).unwrap();
        let noise = base.clone().with_corruption(c, Target::Both).unwrap();
        for s in [small, noise] {
            run_as::<u8>(&s, &images, &tables[0], 0, 100);
            assert!(!s.cache_built::<u8>());
        }
        layouts
    }

    #[test]
    fn concurrent_fills_agree_while_the_cache_builds() {
        let (images, labels) = toy(12, 7, 16);
        let c = Corruption::new("rotate", 3, "dark", [1, 4, 4]).unwrap();
        let base = EpisodeSampler::new(&labels, 16, 5, 2, 3, 42, None).unwrap();
        let plain = base.clone().with_cache_budget(0);
        let plain = plain.with_corruption(c.clone(), Target::Both).unwrap();
        let cached = base.with_corruption(c, Target::Both).unwrap();
        let want = run(&plain, &images, 0, 50);
        // A build held elsewhere (or by a thread that a fork left behind): compute, no wait.
        let held = cached.cache.building.lock().unwrap();
        let computed = run(&cached, &images, 0, 50);
        assert!(!cached.cache_built::<u8>());
        assert_eq!((&computed.0, &computed.2), (&want.0, &want.2));
        drop(held);
        // Each fill is big enough to build the cache: one builds, the others compute.
        let got: Vec<Outputs> = std::thread::scope(|scope| {
            let fills: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| run(&cached, &images, 0, 50)))
                .collect();
            fills.into_iter().map(|f| f.join().unwrap()).collect()
        });
        assert!(cached.cache_built::<u8>());
        for g in got.into_iter().chain([run(&cached, &images, 0, 50)]) {
            assert_eq!((g.0, g.2), (want.0.clone(), want.2.clone()));
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let (_, labels) = toy(4, 3, 1);
        assert!(EpisodeSampler::new(&labels, 1, 5, 1, 1, 0, None)
            .unwrap_err()
            .to_string()
            .contains("ways"));
        let e = EpisodeSampler::new(&labels, 1, 2, 2, 2, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smallest class"), "{e}");
        assert!(EpisodeSampler::new(&labels, 1, 2, 0, 1, 0, None).is_err());
        assert!(EpisodeSampler::new(&[-1, 0], 1, 1, 1, 0, 0, None).is_err());
        assert!(EpisodeSampler::new(&labels, usize::MAX / 2, 2, 1, 1, 0, None).is_err());
        assert!(EpisodeSampler::new(&labels, 1, 1, 1, 0, 0, Some(&[7])).is_err());
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
