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
//!
//! This file holds the sampler, its class index and the episode draw; `fill` writes whole
//! batches of episodes into the caller's buffers ([`EpisodeSampler::sample_into`]).

use std::ops::Range;
use std::sync::Arc;

use rand::seq::{index, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use crate::cache::{CachedRows, CorruptionCache, DEFAULT_CACHE_BYTES};
use crate::corruptions::{Corruption, Kind, Target};
use crate::error::{checked_product, value_err, Error, Result};
pub use crate::pixel::{Pixel, PixelTable};

mod features;
mod fill;
mod variable;
mod variable_fill;

pub use features::check_features;
pub use variable::{Description, VariableConfig, VariableSampler};
pub use variable_fill::{VariableOut, INFO_COLUMNS};
#[cfg(test)]
mod tests;

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

/// Each class present in the labels, ascending, with the range of its items in the
/// class-grouped item order.
type PresentClasses = Vec<(i64, Range<usize>)>;

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
        let per_class = check_sizes(labels, item_size, ways, shots, queries)?;
        let (by_class, present) = group_by_class(labels);
        let class_ids = eligible_classes(&present, classes)?;
        if ways > class_ids.len() {
            return value_err(format!(
                "ways: {ways} is more than the {} classes available",
                class_ids.len()
            ));
        }
        let ranges: Vec<Range<usize>> = class_ids
            .iter()
            .map(|&c| members(&present, c).expect("a present class"))
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
}

/// The checks of [`EpisodeSampler::new`] that need no class index; `shots + queries`.
fn check_sizes(
    labels: &[i64],
    item_size: usize,
    ways: usize,
    shots: usize,
    queries: usize,
) -> Result<usize> {
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
    Ok(per_class)
}

/// The item indices grouped by class (ascending), each class's items in dataset order, and
/// the classes present. Sorting rather than tables indexed by label: labels may be large and
/// sparse.
fn group_by_class(labels: &[i64]) -> (Vec<u32>, PresentClasses) {
    let mut by_class: Vec<u32> = (0..labels.len() as u32).collect();
    by_class.sort_by_key(|&i| labels[i as usize]); // stable: dataset order within a class
    let mut present: PresentClasses = Vec::new();
    for (k, &i) in by_class.iter().enumerate() {
        match present.last_mut() {
            Some((c, range)) if *c == labels[i as usize] => range.end = k + 1,
            _ => present.push((labels[i as usize], k..k + 1)),
        }
    }
    (by_class, present)
}

/// The range of class `c`'s items in the class-grouped order, if it is present.
fn members(present: &[(i64, Range<usize>)], c: i64) -> Option<Range<usize>> {
    present
        .binary_search_by_key(&c, |(id, _)| *id)
        .ok()
        .map(|at| present[at].1.clone())
}

/// The classes episodes draw from, ascending: `classes` (checked: not empty, no repeats,
/// each present), or every present class.
fn eligible_classes(present: &[(i64, Range<usize>)], classes: Option<&[i64]>) -> Result<Vec<i64>> {
    let Some(list) = classes else {
        return Ok(present.iter().map(|(c, _)| *c).collect());
    };
    if list.is_empty() {
        return value_err("classes: must name at least one class, got none");
    }
    let mut v = list.to_vec();
    v.sort_unstable();
    if let Some(w) = v.windows(2).find(|w| w[0] == w[1]) {
        return value_err(format!("classes: class {} is listed twice", w[0]));
    }
    if let Some(&c) = v.iter().find(|&&c| members(present, c).is_none()) {
        let (lo, hi) = (present[0].0, present[present.len() - 1].0);
        return value_err(format!(
            "classes: class {c} has no items in the dataset (labels hold \
             {} classes in {lo}..={hi})",
            present.len()
        ));
    }
    Ok(v)
}
