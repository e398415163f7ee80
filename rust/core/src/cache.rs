//! The sampler's cache of corrupted images: see [`CorruptionCache`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use crate::corruptions::{Corruption, Workspace};
use crate::pixel::{byte_to_unit, prefetch, unit_to_u8, PerPixel, Pixel, PixelTable};
use crate::pool::{self, CORRUPT_PIXEL_COST, PARALLEL_MIN_BYTES};

/// Default memory for caching a corruption's results ([`CorruptionCache`]).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// The results of a corruption with a finite set of them per image ([`Corruption::variants`]:
/// blur, thickening, thinning, rotation, shear; contrast for byte output), computed once for
/// every eligible image and variant and then copied like clean items, so that a long run
/// samples them at about the clean speed. Built (in parallel) by the fill that brings the
/// corrupted items computed so far up to the cache's number of images: building costs about
/// what computing on the fly had already cost, so the cache never costs more than twice the
/// better choice. Only when it fits the byte budget; one cache per output element type.
///
/// The cache is computed from the `images` of the fill that builds it; a fill with other
/// images (another address) computes on the fly. Images changed in place after that are not
/// seen: the sampler's images must not change (as for the Python sampler, which holds them).
#[derive(Debug)]
pub struct CorruptionCache {
    budget: usize,
    /// Corrupted items computed on the fly so far.
    computed: AtomicUsize,
    pub(crate) f32_rows: OnceLock<CachedRows<f32>>,
    pub(crate) u8_rows: OnceLock<CachedRows<u8>>,
    /// Held while rows are built. Fills that find it held compute their items instead of
    /// waiting, which also keeps a process forked during a build (whose builder thread
    /// does not exist there) from waiting forever.
    pub(crate) building: Mutex<()>,
}

impl CorruptionCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            computed: AtomicUsize::new(0),
            f32_rows: OnceLock::new(),
            u8_rows: OnceLock::new(),
            building: Mutex::new(()),
        }
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Counts `n` corrupted items computed on the fly.
    pub(crate) fn add_computed(&self, n: usize) {
        self.computed.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the rows for output type `T` are built.
    pub(crate) fn built<T: Pixel>(&self) -> bool {
        T::pick(self).get().is_some()
    }

    /// The rows for output type `T` to read in a fill of `images` that corrupts `corrupted`
    /// items (`None`: compute them): built now, for the dataset items `items` with
    /// `variants` results each, if that brings the items computed so far up to the rows'
    /// number and they fit the budget.
    pub(crate) fn rows<T: Pixel>(
        &self,
        c: &Corruption,
        variants: usize,
        items: &[u32],
        images: &[u8],
        corrupted: usize,
    ) -> Option<&CachedRows<T>> {
        let slot = T::pick(self);
        let usable = |rows: &CachedRows<T>| rows.images == images.as_ptr() as usize;
        if let Some(rows) = slot.get() {
            return Some(rows).filter(|r| usable(r));
        }
        let d = c.item_size();
        let n_rows = items.len().checked_mul(variants)?;
        let bytes = n_rows.checked_mul(d)?.checked_mul(size_of::<T>())?;
        let so_far = self.computed.load(Ordering::Relaxed);
        if bytes > self.budget || so_far.saturating_add(corrupted) < n_rows {
            return None;
        }
        let Ok(_building) = self.building.try_lock() else {
            return None;
        };
        if slot.get().is_none() {
            let _ = slot.set(CachedRows::build(c, variants, items, images));
        }
        slot.get().filter(|r| usable(r))
    }
}

/// The rows of each output type.
impl PerPixel for CorruptionCache {
    type Of<T> = OnceLock<CachedRows<T>>;
    fn for_u8(&self) -> &OnceLock<CachedRows<u8>> {
        &self.u8_rows
    }
    fn for_f32(&self) -> &OnceLock<CachedRows<f32>> {
        &self.f32_rows
    }
}

/// A built [`CorruptionCache`] for one output type: row `row_of[item] * variants + v` holds
/// variant `v` of dataset item `item`.
#[derive(Debug)]
pub struct CachedRows<T> {
    /// Address of the dataset the rows were computed from.
    images: usize,
    /// Row of each dataset item; `u32::MAX` for items outside the eligible classes.
    row_of: Vec<u32>,
    variants: usize,
    /// Values per row.
    d: usize,
    rows: Rows<T>,
}

#[derive(Debug)]
enum Rows<T> {
    /// Row `r` is `values[r * d..(r + 1) * d]`.
    Full(Vec<T>),
    /// Row `r` is `blob[offsets[r]..offsets[r + 1]]`: its `d` values as bytes, then the `n`
    /// pixels whose value a byte does not hold exactly: their indices (`u16`) and values
    /// (`f32`), little-endian. Float rows of thickened, thinned, rotated or sheared glyphs
    /// are mostly exact bytes (white stays 1.0): 1.1-2.4 bytes per pixel instead of 4, so
    /// fewer cache misses.
    Compact { offsets: Vec<usize>, blob: Vec<u8> },
}

impl<T: Pixel> CachedRows<T> {
    fn build(c: &Corruption, variants: usize, items: &[u32], images: &[u8]) -> Self {
        let d = c.item_size();
        let n_items = images.len() / d;
        let mut row_of = vec![u32::MAX; n_items];
        for (row, &item) in items.iter().enumerate() {
            row_of[item as usize] = row as u32;
        }
        let mut values = huge_page_zeros::<T>(items.len() * variants * d);
        let one = |k: usize, dst: &mut [T], (unit, ws): &mut (Vec<f32>, Workspace)| {
            let item = items[k / variants] as usize;
            let src = &images[item * d..(item + 1) * d];
            let (load, store) = (
                |u: &mut [f32]| u8::load(src, u),
                |u: &mut [f32]| T::store(u, dst),
            );
            c.apply_variant_fused(&mut unit[..d], load, store, k % variants, ws);
        };
        let init = || (vec![0f32; d], Workspace::default());
        let work = values.len().saturating_mul(CORRUPT_PIXEL_COST);
        pool::install_if(values.len() > d && work >= PARALLEL_MIN_BYTES, |par| {
            if par {
                values
                    .par_chunks_mut(d)
                    .enumerate()
                    .for_each_init(init, |st, (k, dst)| one(k, dst, st));
            } else {
                let mut st = init();
                for (k, dst) in values.chunks_mut(d).enumerate() {
                    one(k, dst, &mut st);
                }
            }
        });
        let rows = match T::floats(&values).and_then(|v| compact(v, d)) {
            Some((offsets, blob)) => Rows::Compact { offsets, blob },
            None => Rows::Full(values),
        };
        Self {
            images: images.as_ptr() as usize,
            row_of,
            variants,
            d,
            rows,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_compact(&self) -> bool {
        matches!(self.rows, Rows::Compact { .. })
    }

    /// The row of variant `variant` of dataset item `item` (an eligible one).
    #[inline]
    pub(crate) fn row(&self, item: u32, variant: usize) -> usize {
        self.row_of[item as usize] as usize * self.variants + variant
    }

    /// Asks for row `row` to be fetched into the processor's cache.
    #[inline]
    pub(crate) fn prefetch(&self, row: usize) {
        match &self.rows {
            Rows::Full(values) => {
                let bytes = self.d * size_of::<T>();
                prefetch::<false>(values[row * self.d..].as_ptr() as *const u8, bytes)
            }
            Rows::Compact { offsets, blob } => {
                let (start, end) = (offsets[row], offsets[row + 1]);
                prefetch::<false>(blob[start..].as_ptr(), end - start)
            }
        }
    }

    /// Writes the output of row `row` into `dst`: the same values as `T::from_unit` on the
    /// corrupted item's floats.
    #[inline]
    pub(crate) fn read(&self, row: usize, dst: &mut [T], table: &PixelTable) {
        let d = self.d;
        match &self.rows {
            Rows::Full(values) => T::from_cached(&values[row * d..(row + 1) * d], dst, table),
            Rows::Compact { offsets, blob } => {
                let (pixels, rest) = blob[offsets[row]..offsets[row + 1]].split_at(d);
                T::convert(pixels, dst, table);
                let (at, values) = rest.split_at(rest.len() / 6 * 2);
                for (i, v) in at.chunks_exact(2).zip(values.chunks_exact(4)) {
                    let i = u16::from_le_bytes([i[0], i[1]]) as usize;
                    T::patch(dst, i, f32::from_le_bytes([v[0], v[1], v[2], v[3]]), table);
                }
            }
        }
    }
}

/// Float rows `values` (of `d` values each, in `[0, 1]`) in the compact layout of
/// [`Rows::Compact`], if that takes at most half their memory: reading a row costs a byte
/// conversion plus one store per inexact pixel, which pays for itself only when the inexact
/// pixels are few (measured: glyphs thickened, thinned or sheared, 6-13% of the pixels,
/// read faster; rotated, 24%, slower).
fn compact(values: &[f32], d: usize) -> Option<(Vec<usize>, Vec<u8>)> {
    if d > 1 << 16 {
        return None;
    }
    let bytes = |row: &[f32]| {
        let mut out = vec![0u8; d];
        unit_to_u8(row, &mut out);
        let inexact: Vec<usize> = (0..d)
            .filter(|&i| byte_to_unit(out[i]).to_bits() != row[i].to_bits())
            .collect();
        (out, inexact)
    };
    let encode = |row: &[f32]| {
        let (mut out, inexact) = bytes(row);
        out.extend(inexact.iter().flat_map(|&i| (i as u16).to_le_bytes()));
        out.extend(inexact.iter().flat_map(|&i| row[i].to_le_bytes()));
        out
    };
    let work = values.len().saturating_mul(CORRUPT_PIXEL_COST);
    let size = |row: &[f32]| {
        let mut b = [0u8; 64];
        let inexact = row.chunks(64).map(|chunk| {
            unit_to_u8(chunk, &mut b[..chunk.len()]);
            let pairs = chunk.iter().zip(&b);
            pairs
                .filter(|(v, b)| byte_to_unit(**b).to_bits() != v.to_bits())
                .count()
        });
        d + 6 * inexact.sum::<usize>()
    };
    // Sized first (cheap), encoded only if it pays.
    let total: usize = pool::install_if(work >= PARALLEL_MIN_BYTES, |par| {
        if par {
            values.par_chunks(d).map(size).sum()
        } else {
            values.chunks(d).map(size).sum()
        }
    });
    if total.saturating_mul(2) > size_of_val(values) {
        return None;
    }
    let encoded: Vec<Vec<u8>> = pool::install_if(work >= PARALLEL_MIN_BYTES, |par| {
        if par {
            values.par_chunks(d).map(encode).collect()
        } else {
            values.chunks(d).map(encode).collect()
        }
    });
    let mut blob = huge_page_zeros::<u8>(total);
    let mut offsets = Vec::with_capacity(encoded.len() + 1);
    offsets.push(0);
    for row in &encoded {
        let at = offsets[offsets.len() - 1];
        blob[at..at + row.len()].copy_from_slice(row);
        offsets.push(at + row.len());
    }
    Some((offsets, blob))
}

/// `n` zeros in memory the OS may back with huge pages (Linux's transparent huge pages in
/// "madvise" mode): the cache is read at random, and with 4 KiB pages most rows would cost
/// a page walk (NumPy asks the same for its large arrays).
fn huge_page_zeros<T: Pixel>(n: usize) -> Vec<T> {
    // Zeros come from calloc: fresh pages, none touched before the advice.
    let v = vec![T::default(); n];
    #[cfg(target_os = "linux")]
    {
        let (start, page) = (v.as_ptr() as usize, 4096);
        let (lo, hi) = (
            start.next_multiple_of(page),
            (start + size_of_val(&v[..])) / page * page,
        );
        if hi > lo {
            // SAFETY: advice on whole pages inside `v`'s allocation; it changes no contents.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    v
}
