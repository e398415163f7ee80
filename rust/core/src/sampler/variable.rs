//! Variable-way, variable-shot episodes from one or more sources, following the episode
//! sampling procedure of Meta-Dataset (Triantafillou et al., 2020, section 3.2 and its
//! appendix), without the class hierarchies:
//!
//! 1. the source: drawn with probability proportional to its weight;
//! 2. ways: uniform in `min_ways ..= min(max_ways, classes of the source)`, the classes
//!    drawn uniformly without replacement;
//! 3. queries per class: `min(max_query_per_class, floor(min_c n_c / 2))`, with `n_c` the
//!    items of class `c` (the same for every class of the episode);
//! 4. support set size: `beta ~ U[0, 1)`, `min(max_support, sum_c floor(beta *
//!    min(max_support_per_class, n_c - queries)) + 1)`;
//! 5. shots of class `c`: `alpha_c ~ U[min_log_weight, max_log_weight)`, `p_c ∝ n_c *
//!    exp(alpha_c)`, `min(floor(p_c * (support size - ways)) + 1, n_c - queries)`.
//!
//! Every draw comes from the ChaCha8 stream of `(seed, episode)` ([`episode_rng`]), so
//! episode `i` is a pure function of `(seed, i)` as for the fixed sampler.

use rand::seq::{index, SliceRandom};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{episode_rng, EpisodeSampler};
use crate::error::{value_err, Result};

/// The constants of the procedure; the defaults are Meta-Dataset's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariableConfig {
    pub min_ways: usize,
    pub max_ways: usize,
    pub max_support: usize,
    pub max_support_per_class: usize,
    pub max_query_per_class: usize,
    pub min_log_weight: f64,
    pub max_log_weight: f64,
}

impl Default for VariableConfig {
    fn default() -> Self {
        Self {
            min_ways: 5,
            max_ways: 50,
            max_support: 500,
            max_support_per_class: 100,
            max_query_per_class: 10,
            min_log_weight: 0.5f64.ln(),
            max_log_weight: 2f64.ln(),
        }
    }
}

/// The composition of one episode: its source, and per way the dataset class, shots and
/// queries (the same for every way).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Description {
    pub source: usize,
    pub classes: Vec<i64>,
    /// Index of each way's class in the source's class index.
    pub class_slots: Vec<usize>,
    pub shots: Vec<usize>,
    pub queries: usize,
}

impl Description {
    pub fn ways(&self) -> usize {
        self.classes.len()
    }
    pub fn support_size(&self) -> usize {
        self.shots.iter().sum()
    }
    pub fn query_size(&self) -> usize {
        self.queries * self.ways()
    }
}

/// Variable-way episodes over `sources`, each a class index (an [`EpisodeSampler`] whose
/// fixed sizes are unused) over its own images of a common item size.
#[derive(Debug, Clone)]
pub struct VariableSampler {
    pub(super) sources: Vec<EpisodeSampler>,
    /// Cumulative weights, normalised: the last is 1.
    cumulative: Vec<f64>,
    pub(super) config: VariableConfig,
    pub(super) seed: u64,
}

impl VariableSampler {
    /// Checks the sources (one item size; every class with at least two items and
    /// `min_ways` classes in each), the weights and the configuration.
    pub fn new(
        sources: Vec<EpisodeSampler>,
        weights: &[f64],
        config: VariableConfig,
        seed: u64,
    ) -> Result<Self> {
        if sources.is_empty() {
            return value_err("sources: need at least one dataset, got none");
        }
        if weights.len() != sources.len() {
            return value_err(format!(
                "weights: {} weights for {} sources; give one per source",
                weights.len(),
                sources.len()
            ));
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return value_err(format!(
                "weights: must be finite and >= 0, got {w} for source {i}"
            ));
        }
        let total: f64 = weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return value_err(format!(
                "weights: must have a positive finite sum, got {total}"
            ));
        }
        check_config(&config)?;
        let d = sources[0].item_size;
        for (i, s) in sources.iter().enumerate() {
            if s.item_size != d {
                return value_err(format!(
                    "sources: source {i} holds images of {} values, source 0 of {d}; all \
                     sources need one image shape",
                    s.item_size
                ));
            }
            check_source(s, i, &config)?;
        }
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Ok(Self {
            sources,
            cumulative,
            config,
            seed,
        })
    }

    pub fn config(&self) -> &VariableConfig {
        &self.config
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn item_size(&self) -> usize {
        self.sources[0].item_size
    }
    pub fn sources(&self) -> &[EpisodeSampler] {
        &self.sources
    }

    /// The composition of episode `episode` and its generator, positioned for the item
    /// draws.
    pub fn describe(&self, episode: u64, out: &mut Description) -> ChaCha8Rng {
        let mut rng = episode_rng(self.seed, episode);
        let cfg = &self.config;
        let u: f64 = rng.random();
        out.source = self
            .cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cumulative.len() - 1);
        let src = &self.sources[out.source];
        let n_classes = src.class_ids.len();
        let ways = rng.random_range(cfg.min_ways..=cfg.max_ways.min(n_classes));
        let chosen = index::sample(&mut rng, n_classes, ways);
        out.class_slots.clear();
        out.class_slots.extend(chosen.iter());
        out.classes.clear();
        out.classes
            .extend(out.class_slots.iter().map(|&c| src.class_ids[c]));
        let sizes: Vec<usize> = out
            .class_slots
            .iter()
            .map(|&c| src.offsets[c + 1] - src.offsets[c])
            .collect();
        let smallest = *sizes.iter().min().expect("ways >= 1");
        out.queries = cfg.max_query_per_class.min(smallest / 2);
        let beta: f64 = rng.random();
        let wanted: f64 = sizes
            .iter()
            .map(|&n| (beta * cfg.max_support_per_class.min(n - out.queries) as f64 + 1.0).floor())
            .sum();
        let support_size = (wanted as usize).min(cfg.max_support);
        let span = cfg.max_log_weight - cfg.min_log_weight;
        let props: Vec<f64> = sizes
            .iter()
            .map(|&n| {
                let alpha = cfg.min_log_weight + span * rng.random::<f64>();
                n as f64 * alpha.exp()
            })
            .collect();
        let total: f64 = props.iter().sum();
        let extra = (support_size - ways) as f64;
        out.shots.clear();
        out.shots.extend(
            props
                .iter()
                .zip(&sizes)
                .map(|(p, &n)| (((p / total) * extra).floor() as usize + 1).min(n - out.queries)),
        );
        rng
    }

    /// Draws episode `episode`: its composition, and for each way its shots then its
    /// queries as item indices of the source (all distinct).
    pub fn draw(&self, episode: u64, desc: &mut Description, picks: &mut Vec<u32>) {
        let mut rng = self.describe(episode, desc);
        let src = &self.sources[desc.source];
        picks.clear();
        for (way, &c) in desc.class_slots.iter().enumerate() {
            let members = &src.items[src.offsets[c]..src.offsets[c + 1]];
            let n = desc.shots[way] + desc.queries;
            let mut taken = index::sample(&mut rng, members.len(), n).into_vec();
            taken.shuffle(&mut rng);
            picks.extend(taken.iter().map(|&k| members[k]));
        }
    }
}

fn check_config(cfg: &VariableConfig) -> Result<()> {
    let positive = [
        ("min_ways", cfg.min_ways),
        ("max_support", cfg.max_support),
        ("max_support_per_class", cfg.max_support_per_class),
        ("max_query_per_class", cfg.max_query_per_class),
    ];
    if let Some((name, v)) = positive.iter().find(|(_, v)| *v == 0) {
        return value_err(format!("{name}: must be >= 1, got {v}"));
    }
    if cfg.max_ways < cfg.min_ways {
        return value_err(format!(
            "max_ways: must be >= min_ways = {}, got {}",
            cfg.min_ways, cfg.max_ways
        ));
    }
    if cfg.max_support < cfg.max_ways {
        return value_err(format!(
            "max_support: must be >= max_ways = {} (one support item per way at least), got {}",
            cfg.max_ways, cfg.max_support
        ));
    }
    for (name, v) in [
        ("min_log_weight", cfg.min_log_weight),
        ("max_log_weight", cfg.max_log_weight),
    ] {
        if !v.is_finite() || v.abs() > 50.0 {
            return value_err(format!("{name}: must be finite, within ±50, got {v}"));
        }
    }
    if cfg.max_log_weight < cfg.min_log_weight {
        return value_err(format!(
            "max_log_weight: must be >= min_log_weight = {}, got {}",
            cfg.min_log_weight, cfg.max_log_weight
        ));
    }
    Ok(())
}

/// Source `i` can give every episode the procedure may draw: `min_ways` classes, each with
/// a query and a support item at least.
fn check_source(s: &EpisodeSampler, i: usize, cfg: &VariableConfig) -> Result<()> {
    let n_classes = s.class_ids.len();
    if n_classes < cfg.min_ways {
        return value_err(format!(
            "min_ways: {} is more than the {n_classes} classes of source {i}",
            cfg.min_ways
        ));
    }
    let small = (0..n_classes).find(|&c| s.offsets[c + 1] - s.offsets[c] < 2);
    if let Some(c) = small {
        return value_err(format!(
            "sources: class {} of source {i} has {} item; every class needs at least 2 \
             (a query and a support item)",
            s.class_ids[c],
            s.offsets[c + 1] - s.offsets[c]
        ));
    }
    Ok(())
}
