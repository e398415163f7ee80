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
        let smallest = sizes.iter().copied().min().unwrap_or(0); // ways >= 1
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::sampler::{PixelTable, VariableOut, INFO_COLUMNS};

    /// Classes of 3..=14 items, each image filled with its item index (mod 251).
    fn source(n_classes: usize, d: usize) -> (Vec<u8>, Vec<i64>) {
        let labels: Vec<i64> = (0..n_classes)
            .flat_map(|c| std::iter::repeat_n(c as i64, 3 + c % 12))
            .collect();
        let images = (0..labels.len())
            .flat_map(|i| std::iter::repeat_n((i % 251) as u8, d))
            .collect();
        (images, labels)
    }

    fn sampler(labels: &[&[i64]], weights: &[f64], cfg: VariableConfig) -> Result<VariableSampler> {
        let sources = labels
            .iter()
            .map(|l| EpisodeSampler::new(l, 2, 1, 1, 0, 7, None).unwrap())
            .collect();
        VariableSampler::new(sources, weights, cfg, 7)
    }

    fn small() -> VariableConfig {
        VariableConfig {
            min_ways: 2,
            max_ways: 9,
            max_support: 40,
            ..VariableConfig::default()
        }
    }

    type Out = (Vec<u8>, Vec<i64>, Vec<u8>, Vec<i64>, Vec<i64>, Vec<i64>);

    fn fill(
        s: &VariableSampler,
        images: &[&[u8]],
        start: u64,
        count: usize,
        room: [usize; 3],
    ) -> Out {
        let [sp, qp, wp] = room;
        let mut o: Out = (
            vec![9; count * sp * 2],
            vec![9; count * sp],
            vec![9; count * qp * 2],
            vec![9; count * qp],
            vec![9; count * wp],
            vec![9; count * INFO_COLUMNS],
        );
        let table = PixelTable::new(1, 2, &[], &[]).unwrap();
        let out = VariableOut {
            support: sp,
            query: qp,
            ways: wp,
            support_x: &mut o.0,
            support_y: &mut o.1,
            query_x: &mut o.2,
            query_y: &mut o.3,
            classes: &mut o.4,
            info: &mut o.5,
        };
        s.sample_into(images, &table, start, count, out).unwrap();
        o
    }

    #[test]
    fn compositions_follow_the_procedure() {
        let (_, labels) = source(20, 2);
        let s = sampler(&[&labels], &[1.0], small()).unwrap();
        let mut d = Description::default();
        let mut seen_ways = std::collections::BTreeSet::new();
        for e in 0..500 {
            s.describe(e, &mut d);
            let sizes: Vec<usize> = d.classes.iter().map(|&c| 3 + c as usize % 12).collect();
            assert!((2..=9).contains(&d.ways()));
            seen_ways.insert(d.ways());
            assert_eq!(d.queries, 10.min(sizes.iter().min().unwrap() / 2));
            assert!(d.support_size() <= 40 && d.support_size() >= d.ways());
            for (k, n) in d.shots.iter().zip(&sizes) {
                assert!(*k >= 1 && *k <= n - d.queries);
            }
        }
        assert_eq!(seen_ways.len(), 8, "every number of ways occurs");
    }

    #[test]
    fn batches_split_any_way_and_pad() {
        let (images, labels) = source(20, 2);
        let s = sampler(&[&labels], &[1.0], small()).unwrap();
        let room = [40, 90, 9];
        let whole = fill(&s, &[&images], 3, 6, room);
        let a = fill(&s, &[&images], 3, 2, room);
        let b = fill(&s, &[&images], 5, 4, room);
        assert_eq!([a.0, b.0].concat(), whole.0);
        assert_eq!([a.3, b.3].concat(), whole.3);
        assert_eq!([a.5, b.5].concat(), whole.5);
        for j in 0..6 {
            let info = &whole.5[j * 4..j * 4 + 4];
            let (w, ns) = (info[1] as usize, info[2] as usize);
            assert!(whole.1[j * 40 + ns..(j + 1) * 40].iter().all(|&y| y == -1));
            assert!(whole.0[(j * 40 + ns) * 2..(j + 1) * 80]
                .iter()
                .all(|&x| x == 0));
            assert!(whole.4[j * 9 + w..(j + 1) * 9].iter().all(|&c| c == -1));
            // each support item is an image of its way's class
            for k in 0..ns {
                let item = whole.0[(j * 40 + k) * 2] as usize;
                let way = whole.1[j * 40 + k] as usize;
                assert_eq!(labels[item], whole.4[j * 9 + way]);
            }
        }
    }

    #[test]
    fn a_zero_weight_source_is_never_drawn() {
        let (_, a) = source(20, 2);
        let (_, b) = source(6, 2);
        let s = sampler(&[&a, &b], &[0.0, 1.0], small()).unwrap();
        let mut d = Description::default();
        for e in 0..200 {
            s.describe(e, &mut d);
            assert_eq!(d.source, 1);
            assert!(d.ways() <= 6);
        }
    }

    #[test]
    fn bad_configurations_are_named() {
        let (_, labels) = source(20, 2);
        let err = |cfg: VariableConfig, w: &[f64]| match sampler(&[&labels], w, cfg) {
            Err(Error::Value(m)) => m,
            other => panic!("expected an error, got {other:?}"),
        };
        let base = small();
        assert!(err(
            VariableConfig {
                min_ways: 0,
                ..base
            },
            &[1.0]
        )
        .starts_with("min_ways"));
        assert!(err(
            VariableConfig {
                min_ways: 21,
                max_ways: 30,
                max_support: 40,
                ..base
            },
            &[1.0]
        )
        .starts_with("min_ways"));
        assert!(err(
            VariableConfig {
                max_ways: 1,
                ..base
            },
            &[1.0]
        )
        .starts_with("max_ways"));
        assert!(err(
            VariableConfig {
                max_support: 3,
                ..base
            },
            &[1.0]
        )
        .starts_with("max_support"));
        let nan = VariableConfig {
            min_log_weight: f64::NAN,
            ..base
        };
        assert!(err(nan, &[1.0]).starts_with("min_log_weight"));
        assert!(err(base, &[1.0, 2.0]).starts_with("weights"));
        assert!(err(base, &[f64::INFINITY]).starts_with("weights"));
        assert!(err(base, &[0.0]).starts_with("weights"));
    }
}
