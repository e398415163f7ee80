//! metarobust-core: the CPU hot paths of metarobust, in plain Rust with no Python in it.
//!
//! - [`sampler`]: N-way K-shot episode sampling over a borrowed `(N, C, H, W)` uint8 array,
//!   counter-based so that episode `i` depends only on `(seed, i)`; with a corruption, a
//!   cache of the corrupted images (`cache`) for the corruptions with few results per image.
//! - [`pixel`]: the element types of images (bytes, floats) and their conversions, shared by
//!   the sampler, its cache and the corruptions.
//! - [`prototypes`]: per-class mean and robust aggregators, with the mean's backward.
//! - [`distances`]: squared-Euclidean and cosine distances with their backward passes,
//!   and a fused prototypes + distances kernel for episode-sized shapes.
//! - [`corruptions`]: ten image corruptions at five severities (noise, blur, stroke width,
//!   elastic, occlusion, contrast, rotation, shear), counter-based like the sampler, one
//!   file per family, with a table of their parameters ([`corruptions::INFO`]).
//! - [`conv_block`]: the first block of a pooling Conv-4 (conv, BatchNorm, max-pool, ReLU)
//!   fused for CPU training, forward and parameter gradients.
//! - [`strided_block`]: the same for the first block of Finn et al.'s Conv-4 (conv with
//!   stride 2, BatchNorm, ReLU), which MAML's query passes spend much of their time in.
//!
//! - [`glyphs`]: procedural handwritten-like glyphs, an Omniglot stand-in.
//! - [`pool`]: the rayon pool (fork-safe) and the sizes at which work goes parallel.
//! - [`memory`]: sizes checked before allocating, and allocations that fail with an error.
//!
//! Every function checks its arguments and returns [`Error`] rather than panicking.

mod cache;
pub mod conv_block;
pub mod corruptions;
pub mod distances;
pub mod error;
pub mod glyphs;
pub mod memory;
pub mod pixel;
pub mod pool;
pub mod prototypes;
pub mod sampler;
pub mod strided_block;
#[cfg(test)]
mod test_util;

pub use error::{Error, Result};
