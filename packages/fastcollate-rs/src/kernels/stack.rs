//! Stacking equal-sized items into one contiguous buffer (the heart of `collate`).

use super::{checked_mul, memcpy, threads_for, KernelError};

/// Copies each of `srcs` (all `item_bytes` long) one after another into `dst`.
///
/// `dst` must be exactly `srcs.len() * item_bytes` long. Threads split `dst` by bytes (not by items), so two
/// huge items still use every thread.
pub fn stack(
    dst: &mut [u8],
    srcs: &[&[u8]],
    item_bytes: usize,
    threads: usize,
) -> Result<(), KernelError> {
    for (i, src) in srcs.iter().enumerate() {
        if src.len() != item_bytes {
            return Err(KernelError::Length {
                what: format!("item {i}"),
                expected: item_bytes,
                got: src.len(),
            });
        }
    }
    let total = checked_mul(srcs.len(), item_bytes, "batch size times item size")?;
    if dst.len() != total {
        return Err(KernelError::Length {
            what: "output buffer".into(),
            expected: total,
            got: dst.len(),
        });
    }
    if total == 0 {
        return Ok(());
    }
    // Work unit: one byte-block; pick a block so the split is even and each block stays cache-line sized.
    const BLOCK: usize = 4096;
    let threads = threads_for(total, threads);
    let streaming = total >= memcpy::STREAMING_MIN_BYTES;
    if threads == 1 {
        copy_span(dst, 0, srcs, item_bytes, streaming);
        return Ok(());
    }
    let blocks = total.div_ceil(BLOCK);
    let ranges = super::split_ranges(blocks, threads);
    std::thread::scope(|scope| {
        let mut rest: &mut [u8] = dst;
        let mut offset = 0usize;
        for range in ranges {
            let end = (range.end * BLOCK).min(total);
            let (chunk, tail) = rest.split_at_mut(end - offset);
            rest = tail;
            let start = offset;
            offset = end;
            scope.spawn(move || copy_span(chunk, start, srcs, item_bytes, streaming));
        }
    });
    Ok(())
}

/// Fills `chunk`, which is `dst[start..start + chunk.len()]`, from the concatenation of `srcs`.
fn copy_span(chunk: &mut [u8], start: usize, srcs: &[&[u8]], item_bytes: usize, streaming: bool) {
    let mut pos = start;
    let mut out = chunk;
    while !out.is_empty() {
        let item = pos / item_bytes;
        let within = pos % item_bytes;
        let n = (item_bytes - within).min(out.len());
        let (head, tail) = out.split_at_mut(n);
        memcpy::copy(head, &srcs[item][within..within + n], streaming);
        out = tail;
        pos += n;
    }
    memcpy::fence(streaming);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize, item: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| (0..item).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect()
    }

    #[test]
    fn stack_equals_concatenation_for_any_thread_count() {
        for &(n, item) in &[(1, 1), (3, 5), (64, 4099), (2, 3 << 20), (7, 1 << 18)] {
            let data = items(n, item);
            let srcs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let expected = data.concat();
            for threads in [1, 2, 3, 8] {
                let mut dst = vec![0u8; n * item];
                stack(&mut dst, &srcs, item, threads).unwrap();
                assert!(dst == expected, "n={n} item={item} threads={threads}");
            }
        }
    }

    #[test]
    fn stack_rejects_wrong_lengths() {
        let a = [1u8; 4];
        let b = [2u8; 3];
        let mut dst = [0u8; 8];
        let err = stack(&mut dst, &[&a, &b], 4, 1).unwrap_err();
        assert_eq!(
            err,
            KernelError::Length {
                what: "item 1".into(),
                expected: 4,
                got: 3
            }
        );
        let mut short = [0u8; 7];
        let err = stack(&mut short, &[&a, &a], 4, 1).unwrap_err();
        assert!(matches!(
            err,
            KernelError::Length {
                expected: 8,
                got: 7,
                ..
            }
        ));
        assert_eq!(dst, [0u8; 8], "nothing is written when the check fails");
    }

    #[test]
    fn stack_of_nothing_is_fine() {
        let mut dst: [u8; 0] = [];
        stack(&mut dst, &[], 16, 4).unwrap();
    }

    #[test]
    fn stack_detects_size_overflow() {
        let a = [0u8; 0];
        let srcs = vec![&a[..]; 3];
        let mut dst: [u8; 0] = [];
        assert_eq!(stack(&mut dst, &srcs, 0, 1), Ok(()));
        assert_eq!(
            checked_mul(usize::MAX, 2, "x"),
            Err(KernelError::Overflow("x"))
        );
    }
}
