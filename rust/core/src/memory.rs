//! Sizes checked before anything is allocated, and allocations that fail with an error.
//!
//! Rust's infallible allocations (`vec![x; n]`, `Vec::with_capacity`) panic on a size
//! overflow and abort the process when the allocator refuses, so a size that comes from a
//! caller goes through [`bytes_of`] (checked arithmetic), [`check_bytes`] (nothing above
//! `isize::MAX`, the most any allocation can hold, nor above the machine's memory: such a
//! buffer could never be filled) and [`try_vec`] (`try_reserve_exact`). Errors name the
//! argument the size comes from.

use std::sync::OnceLock;

use crate::error::{value_err, Error, Result};

/// `size_of::<T>() * product(factors)`, with an error naming `what` on overflow.
pub fn bytes_of<T>(factors: &[usize], what: &str) -> Result<usize> {
    factors
        .iter()
        .try_fold(std::mem::size_of::<T>(), |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| {
            Error::Value(format!(
                "{what}: a buffer of {factors:?} values of {} bytes overflows the address space",
                std::mem::size_of::<T>()
            ))
        })
}

/// The machine's physical memory in bytes (`isize::MAX` where it cannot be told).
pub fn physical_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| query_physical_bytes().unwrap_or(isize::MAX as usize))
}

#[cfg(target_os = "linux")]
fn query_physical_bytes() -> Option<usize> {
    // SAFETY: sysconf reads system constants; no memory is passed.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (pages, page) = (usize::try_from(pages).ok()?, usize::try_from(page).ok()?);
    pages.checked_mul(page).filter(|&b| b > 0)
}

#[cfg(not(target_os = "linux"))]
fn query_physical_bytes() -> Option<usize> {
    None
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Refuses a buffer of `bytes`: above `isize::MAX` (no allocation can be that large) or
/// above the machine's physical memory (a request to report before allocating: with
/// overcommit the allocation may even succeed and the process be killed while filling it),
/// a ValueError naming the argument `what`, as the Python layer's `check_nbytes`.
pub fn check_bytes(bytes: usize, what: &str) -> Result<()> {
    if bytes > isize::MAX as usize {
        return value_err(format!(
            "{what}: needs {bytes} bytes, more than any buffer can hold ({} bytes)",
            isize::MAX
        ));
    }
    let physical = physical_bytes();
    if bytes > physical {
        return value_err(format!(
            "{what}: needs {bytes} bytes ({:.1} GiB), more than this machine's memory \
             ({:.1} GiB)",
            gib(bytes),
            gib(physical)
        ));
    }
    Ok(())
}

/// `n` copies of `value`, allocated fallibly: [`check_bytes`], then a MemoryError naming
/// `what` if the allocator refuses.
pub fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_vec_with_capacity(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// A copy of `values`, allocated fallibly as [`try_vec`].
pub fn try_to_vec<T: Clone>(values: &[T], what: &str) -> Result<Vec<T>> {
    let mut v = try_vec_with_capacity(values.len(), what)?;
    v.extend_from_slice(values);
    Ok(v)
}

/// An empty vector with room for `n` values, allocated fallibly as [`try_vec`].
pub fn try_vec_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    check_bytes(bytes_of::<T>(&[n], what)?, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::Memory(format!(
            "{what}: could not allocate {n} values of {} bytes",
            std::mem::size_of::<T>()
        ))
    })?;
    Ok(v)
}

/// The payload of the unwinding that [`grow_scratch`] starts when the allocator refuses a
/// scratch buffer: the binding's guard reports it as a MemoryError about the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchRefused {
    /// The bytes the buffer needed.
    pub bytes: usize,
}

/// `v` grown to at least `n` values (new ones `value`), its first `n` returned. A kernel's
/// scratch grows deep inside loops that return no error; where the allocator refuses (a
/// huge image), this unwinds with [`ScratchRefused`] instead of aborting the process as
/// `Vec::resize` would.
pub fn grow_scratch<T: Clone>(v: &mut Vec<T>, n: usize, value: T) -> &mut [T] {
    if v.len() < n {
        if v.try_reserve_exact(n - v.len()).is_err() {
            let bytes = n.saturating_mul(std::mem::size_of::<T>());
            std::panic::panic_any(ScratchRefused { bytes });
        }
        v.resize(n, value);
    }
    &mut v[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_overflow_and_absurd_sizes_are_errors() {
        assert_eq!(bytes_of::<f32>(&[2, 3], "x").unwrap(), 24);
        assert!(bytes_of::<f32>(&[usize::MAX, 2], "x")
            .unwrap_err()
            .to_string()
            .starts_with("x: "));
        assert!(matches!(
            check_bytes(usize::MAX, "out"),
            Err(Error::Value(m)) if m.starts_with("out: ")
        ));
        assert!(physical_bytes() > 0);
        if physical_bytes() < isize::MAX as usize {
            assert!(matches!(
                check_bytes(physical_bytes() + 1, "out"),
                Err(Error::Value(m)) if m.starts_with("out: ")
            ));
        }
        assert!(try_vec(1 << 62, 0u8, "n").is_err());
        assert_eq!(try_vec(3, 7u8, "n").unwrap(), vec![7, 7, 7]);
        assert_eq!(try_to_vec(&[1, 2], "v").unwrap(), vec![1, 2]);
    }
}
