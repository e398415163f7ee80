//! Writing a batch of variable-way episodes into the caller's padded buffers
//! ([`VariableSampler::sample_into`]). Episode `j` takes row `j` of every output; its items
//! come first (support items grouped by way, queries grouped by way), then padding: zero
//! pixels, label -1, class -1.

use rayon::prelude::*;

use super::variable::{Description, VariableSampler};
use crate::error::{checked_product, value_err, Result};
use crate::pixel::{prefetch, Pixel, PixelTable};
use crate::pool::{self, PARALLEL_MIN_BYTES};

/// How many items ahead of the copy the sampler prefetches.
const PREFETCH_AHEAD: usize = 4;

/// Columns of [`VariableOut::info`]: source, ways, support items, query items.
pub const INFO_COLUMNS: usize = 4;

/// Padded output buffers of `count` episodes, with room for `support` support items,
/// `query` query items and `ways` ways per episode (shapes in the field docs).
pub struct VariableOut<'a, T> {
    pub support: usize,
    pub query: usize,
    pub ways: usize,
    /// `(count, support, item_size)`
    pub support_x: &'a mut [T],
    /// `(count, support)`, -1 past the episode's support items
    pub support_y: &'a mut [i64],
    /// `(count, query, item_size)`
    pub query_x: &'a mut [T],
    /// `(count, query)`, -1 past the episode's queries
    pub query_y: &'a mut [i64],
    /// `(count, ways)`: the dataset class of each way, -1 past the episode's ways
    pub classes: &'a mut [i64],
    /// `(count, INFO_COLUMNS)`: source, ways, support items, query items
    pub info: &'a mut [i64],
}

/// One episode's rows of the outputs.
struct Rows<'r, T> {
    sx: &'r mut [T],
    sy: &'r mut [i64],
    qx: &'r mut [T],
    qy: &'r mut [i64],
    cl: &'r mut [i64],
    info: &'r mut [i64],
}

impl VariableSampler {
    /// The compositions of episodes `start .. start + count` (`out` is cleared first).
    pub fn describe_range(&self, start: u64, count: usize, out: &mut Vec<Description>) {
        out.clear();
        for j in 0..count {
            let mut d = Description::default();
            self.describe(start + j as u64, &mut d);
            out.push(d);
        }
    }

    /// Fills `out` with episodes `start .. start + count` in parallel. `images[s]` is the
    /// whole of source `s`, `n_items * item_size` bytes.
    pub fn sample_into<T: Pixel>(
        &self,
        images: &[&[u8]],
        table: &PixelTable,
        start: u64,
        count: usize,
        out: VariableOut<'_, T>,
    ) -> Result<()> {
        self.check_fill(images, table, start, count, &out)?;
        let mut descs = Vec::with_capacity(count);
        self.describe_range(start, count, &mut descs);
        check_room(&descs, start, &out)?;
        if count == 0 {
            return Ok(());
        }
        let items: usize = descs
            .iter()
            .map(|e| e.support_size() + e.query_size())
            .sum();
        let work = items
            .saturating_mul(self.item_size())
            .saturating_mul(size_of::<T>());
        self.run(images, table, start, count, work, out);
        Ok(())
    }

    /// Fills the episodes of `out`, on the whole pool when `work` (output bytes) pays for
    /// waking it.
    fn run<T: Pixel>(
        &self,
        images: &[&[u8]],
        table: &PixelTable,
        start: u64,
        count: usize,
        work: usize,
        out: VariableOut<'_, T>,
    ) {
        let d = self.item_size();
        let (sp, qp, wp) = (out.support, out.query, out.ways);
        // Every episode has queries, and check_room saw them fit: `qp >= 1`, so no chunk
        // size is 0 (chunks_mut refuses 0).
        let (qx_all, qy_all) = (out.query_x, out.query_y);
        let fill = |j: usize, rows: Rows<'_, T>, picks: &mut Vec<u32>| {
            self.episode(images, table, start + j as u64, rows, picks);
        };
        pool::install_if(count > 1 && work >= PARALLEL_MIN_BYTES, |par| {
            let (qxc, qyc) = (qp * d, qp);
            if !par {
                let mut picks = Vec::new();
                let chunks = out
                    .support_x
                    .chunks_mut(sp * d)
                    .zip(out.support_y.chunks_mut(sp))
                    .zip(qx_all.chunks_mut(qxc).zip(qy_all.chunks_mut(qyc)))
                    .zip(
                        out.classes
                            .chunks_mut(wp)
                            .zip(out.info.chunks_mut(INFO_COLUMNS)),
                    );
                for (j, (((sx, sy), (qx, qy)), (cl, info))) in chunks.enumerate() {
                    let rows = Rows {
                        sx,
                        sy,
                        qx,
                        qy,
                        cl,
                        info,
                    };
                    fill(j, rows, &mut picks);
                }
                return;
            }
            (
                out.support_x.par_chunks_mut(sp * d),
                out.support_y.par_chunks_mut(sp),
                qx_all.par_chunks_mut(qxc),
                qy_all.par_chunks_mut(qyc),
                out.classes.par_chunks_mut(wp),
                out.info.par_chunks_mut(INFO_COLUMNS),
            )
                .into_par_iter()
                .enumerate()
                .for_each_init(Vec::new, |picks, (j, (sx, sy, qx, qy, cl, info))| {
                    fill(
                        j,
                        Rows {
                            sx,
                            sy,
                            qx,
                            qy,
                            cl,
                            info,
                        },
                        picks,
                    )
                });
        });
    }

    /// The argument checks of [`sample_into`](Self::sample_into) that need no episode.
    fn check_fill<T>(
        &self,
        images: &[&[u8]],
        table: &PixelTable,
        start: u64,
        count: usize,
        out: &VariableOut<'_, T>,
    ) -> Result<()> {
        if images.len() != self.sources.len() {
            return value_err(format!(
                "images: {} image arrays for {} sources",
                images.len(),
                self.sources.len()
            ));
        }
        let d = self.item_size();
        for (i, (im, s)) in images.iter().zip(&self.sources).enumerate() {
            if Some(im.len()) != s.n_items.checked_mul(d) {
                return value_err(format!(
                    "images: source {i}: expected {} items of {d} bytes, got {} bytes",
                    s.n_items,
                    im.len()
                ));
            }
        }
        if table.channels() * table.plane() != d {
            return value_err("mean/std: channel layout does not match the images");
        }
        if count > 0 && start.checked_add(count as u64 - 1).is_none() {
            return value_err(format!(
                "start: episodes {start} .. {start} + {count} pass the last index 2**64 - 1"
            ));
        }
        if out.support == 0 || out.ways == 0 {
            return value_err("support_x: room for at least one support item and way needed");
        }
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
        expect("support_x", out.support_x.len(), &[count, out.support, d])?;
        expect("support_y", out.support_y.len(), &[count, out.support])?;
        expect("query_x", out.query_x.len(), &[count, out.query, d])?;
        expect("query_y", out.query_y.len(), &[count, out.query])?;
        expect("classes", out.classes.len(), &[count, out.ways])?;
        expect("info", out.info.len(), &[count, INFO_COLUMNS])
    }

    /// Writes episode `episode` (composition `desc`) and its padding into `rows`.
    fn episode<T: Pixel>(
        &self,
        images: &[&[u8]],
        table: &PixelTable,
        episode: u64,
        rows: Rows<'_, T>,
        picks: &mut Vec<u32>,
    ) {
        let d = self.item_size();
        let mut desc = Description::default();
        self.draw(episode, &mut desc, picks);
        let src = images[desc.source];
        let (ways, q) = (desc.ways(), desc.queries);
        let (mut at, mut support) = (0, 0);
        for way in 0..ways {
            let n = desc.shots[way] + q;
            for k in 0..n {
                if let Some(&ahead) = picks.get(at + k + PREFETCH_AHEAD) {
                    prefetch::<false>(src[ahead as usize * d..].as_ptr(), d);
                }
                let item = picks[at + k] as usize;
                let from = &src[item * d..(item + 1) * d];
                let (y, x) = if k < desc.shots[way] {
                    support += 1;
                    (
                        &mut rows.sy[support - 1],
                        &mut rows.sx[(support - 1) * d..support * d],
                    )
                } else {
                    let slot = way * q + (k - desc.shots[way]);
                    (&mut rows.qy[slot], &mut rows.qx[slot * d..(slot + 1) * d])
                };
                *y = way as i64;
                T::convert(from, x, table);
            }
            at += n;
        }
        let queries = ways * q;
        rows.sx[support * d..].fill(T::default());
        rows.sy[support..].fill(-1);
        rows.qx[queries * d..].fill(T::default());
        rows.qy[queries..].fill(-1);
        rows.cl[..ways].copy_from_slice(&desc.classes);
        rows.cl[ways..].fill(-1);
        let info = [desc.source, ways, support, queries];
        for (o, v) in rows.info.iter_mut().zip(info) {
            *o = v as i64;
        }
    }
}

/// Every episode fits the buffers' room.
fn check_room<T>(descs: &[Description], start: u64, out: &VariableOut<'_, T>) -> Result<()> {
    for (j, e) in descs.iter().enumerate() {
        let needs = [
            ("support_x", e.support_size(), out.support, "support items"),
            ("query_x", e.query_size(), out.query, "query items"),
            ("classes", e.ways(), out.ways, "ways"),
        ];
        for (name, need, room, what) in needs {
            if need > room {
                return value_err(format!(
                    "{name}: episode {} has {need} {what}, the buffer holds {room} per episode",
                    start + j as u64
                ));
            }
        }
    }
    Ok(())
}
