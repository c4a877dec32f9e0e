//! Copy kernels: plain Rust on byte slices, no Python. Every length is checked before a byte moves, so a bad
//! argument is an error value, never undefined behaviour. Work is split into contiguous chunks, one per thread,
//! with scoped threads (no pool survives a `fork()`, which is what DataLoader workers do).

mod gather;
pub mod memcpy;
mod pad;
mod stack;

pub use gather::{gather_rows, resolve_indices};
pub use pad::{pad_rows, PadLayout};
pub use stack::stack;

use std::fmt;

/// Below this many bytes per thread, starting a thread costs more than it saves.
pub const MIN_BYTES_PER_THREAD: usize = 256 * 1024;

/// What a kernel refused, with the numbers that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// A buffer's byte length is not the one the layout implies.
    Length {
        what: String,
        expected: usize,
        got: usize,
    },
    /// A size computation overflowed `usize`.
    Overflow(&'static str),
    /// A gather index outside `[-len, len)`.
    Index {
        position: usize,
        index: i64,
        len: usize,
    },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Length {
                what,
                expected,
                got,
            } => {
                write!(f, "{what} has {got} bytes, expected {expected}")
            }
            KernelError::Overflow(what) => write!(f, "{what} overflows the address space"),
            KernelError::Index {
                position,
                index,
                len,
            } => write!(
                f,
                "index {index} at position {position} is out of range for a dataset of {len} rows"
            ),
        }
    }
}

impl std::error::Error for KernelError {}

/// How many threads to use for `bytes` of copying when the caller allows `requested`.
pub fn threads_for(bytes: usize, requested: usize) -> usize {
    requested.clamp(1, (bytes / MIN_BYTES_PER_THREAD).max(1))
}

pub(crate) fn checked_mul(a: usize, b: usize, what: &'static str) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or(KernelError::Overflow(what))
}

/// Splits `units` work units into at most `parts` contiguous ranges of near-equal size.
pub(crate) fn split_ranges(units: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, units.max(1));
    let base = units / parts;
    let extra = units % parts;
    let mut start = 0;
    (0..parts)
        .map(|p| {
            let len = base + usize::from(p < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// Runs `job(unit_range, dst_chunk)` over `dst` cut into `parts` chunks of whole units of `unit_bytes` bytes.
pub(crate) fn parallel_units<F>(dst: &mut [u8], unit_bytes: usize, parts: usize, job: F)
where
    F: Fn(std::ops::Range<usize>, &mut [u8]) + Sync,
{
    let units = dst.len().checked_div(unit_bytes).unwrap_or(0);
    let ranges = split_ranges(units, parts);
    if ranges.len() <= 1 {
        job(0..units, dst);
        return;
    }
    std::thread::scope(|scope| {
        let mut rest = dst;
        let mut handles = Vec::with_capacity(ranges.len());
        for range in ranges {
            let (chunk, tail) = rest.split_at_mut(range.len() * unit_bytes);
            rest = tail;
            let job = &job;
            handles.push(scope.spawn(move || job(range, chunk)));
        }
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_cover_every_unit_once() {
        for units in 0..40 {
            for parts in 1..9 {
                let ranges = split_ranges(units, parts);
                assert!(ranges.len() <= parts.max(1));
                let flat: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..units).collect::<Vec<_>>());
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "unbalanced split {sizes:?}");
            }
        }
    }

    #[test]
    fn threads_for_keeps_small_copies_on_one_thread() {
        assert_eq!(threads_for(1000, 8), 1);
        assert_eq!(threads_for(MIN_BYTES_PER_THREAD * 3, 8), 3);
        assert_eq!(threads_for(MIN_BYTES_PER_THREAD * 100, 4), 4);
        assert_eq!(threads_for(MIN_BYTES_PER_THREAD * 100, 0), 1);
    }
}
