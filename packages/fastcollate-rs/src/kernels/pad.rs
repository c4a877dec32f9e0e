//! Padding variable-length sequences into one `[batch, max_len, ...]` buffer, padding fused into the copy.

use super::{checked_mul, memcpy, parallel_units, threads_for, KernelError};

/// The geometry of a padded batch.
#[derive(Debug, Clone, Copy)]
pub struct PadLayout {
    /// Bytes of one time step (one element of the scalar type times the trailing dimensions).
    pub step_bytes: usize,
    /// Time steps per output row (the longest sequence, possibly rounded up).
    pub max_len: usize,
}

/// Writes row `i` of `dst` as `srcs[i]` followed by `pattern` repeated to the end of the row, and row `i` of
/// `mask` as `lengths[i]` ones then zeros.
///
/// `srcs[i]` must hold a whole number of steps, at most `max_len`; `pattern` is one scalar's bytes and must
/// divide `step_bytes`.
pub fn pad_rows(
    dst: &mut [u8],
    mask: &mut [u8],
    srcs: &[&[u8]],
    layout: PadLayout,
    pattern: &[u8],
    threads: usize,
) -> Result<(), KernelError> {
    let PadLayout {
        step_bytes,
        max_len,
    } = layout;
    if pattern.is_empty() || step_bytes % pattern.len() != 0 {
        return Err(KernelError::Length {
            what: "pad value".into(),
            expected: step_bytes,
            got: pattern.len(),
        });
    }
    let row_bytes = checked_mul(step_bytes, max_len, "row size")?;
    let total = checked_mul(row_bytes, srcs.len(), "padded batch size")?;
    if dst.len() != total {
        return Err(KernelError::Length {
            what: "output buffer".into(),
            expected: total,
            got: dst.len(),
        });
    }
    let mask_total = checked_mul(max_len, srcs.len(), "mask size")?;
    if mask.len() != mask_total {
        return Err(KernelError::Length {
            what: "mask buffer".into(),
            expected: mask_total,
            got: mask.len(),
        });
    }
    for (i, src) in srcs.iter().enumerate() {
        if step_bytes == 0 || src.len() % step_bytes != 0 || src.len() > row_bytes {
            return Err(KernelError::Length {
                what: format!("sequence {i}"),
                expected: row_bytes,
                got: src.len(),
            });
        }
    }
    if total == 0 {
        return Ok(()); // an empty batch, or only empty sequences: the mask is empty too
    }
    let zero_pad = pattern.iter().all(|&b| b == 0);
    let threads = threads_for(total, threads);
    let streaming = total >= memcpy::STREAMING_MIN_BYTES;
    parallel_units(dst, row_bytes, threads, |rows, chunk| {
        for (row, out) in rows.zip(chunk.chunks_exact_mut(row_bytes)) {
            let src = srcs[row];
            let (head, tail) = out.split_at_mut(src.len());
            memcpy::copy(head, src, streaming);
            if zero_pad {
                tail.fill(0);
            } else {
                for piece in tail.chunks_exact_mut(pattern.len()) {
                    piece.copy_from_slice(pattern);
                }
            }
        }
        memcpy::fence(streaming);
    });
    for (row, src) in mask.chunks_exact_mut(max_len).zip(srcs) {
        let len = src.len() / step_bytes;
        row[..len].fill(1);
        row[len..].fill(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_each_row_and_marks_the_mask() {
        // int16 sequences of lengths 3, 1, 0 with pad value 0x0102 (little-endian bytes [2, 1]).
        let a: Vec<u8> = vec![1, 0, 2, 0, 3, 0];
        let b: Vec<u8> = vec![9, 0];
        let c: Vec<u8> = vec![];
        let layout = PadLayout {
            step_bytes: 2,
            max_len: 4,
        };
        let mut dst = vec![0xAAu8; 3 * 8];
        let mut mask = vec![0xAAu8; 3 * 4];
        pad_rows(&mut dst, &mut mask, &[&a, &b, &c], layout, &[2, 1], 1).unwrap();
        assert_eq!(&dst[0..8], &[1, 0, 2, 0, 3, 0, 2, 1]);
        assert_eq!(&dst[8..16], &[9, 0, 2, 1, 2, 1, 2, 1]);
        assert_eq!(&dst[16..24], &[2, 1, 2, 1, 2, 1, 2, 1]);
        assert_eq!(mask, vec![1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn threaded_padding_equals_single_threaded() {
        let seqs: Vec<Vec<u8>> = (0..37)
            .map(|i| vec![i as u8; 8 * (1 + i * 977 % 4096)])
            .collect();
        let srcs: Vec<&[u8]> = seqs.iter().map(Vec::as_slice).collect();
        let layout = PadLayout {
            step_bytes: 8,
            max_len: 4096,
        };
        let mut one = vec![0u8; 37 * 8 * 4096];
        let mut many = vec![1u8; 37 * 8 * 4096];
        let (mut m1, mut m2) = (vec![0u8; 37 * 4096], vec![1u8; 37 * 4096]);
        pad_rows(&mut one, &mut m1, &srcs, layout, &[0; 8], 1).unwrap();
        pad_rows(&mut many, &mut m2, &srcs, layout, &[0; 8], 4).unwrap();
        assert!(one == many);
        assert_eq!(m1, m2);
    }

    #[test]
    fn rejects_a_sequence_longer_than_the_row_or_not_whole_steps() {
        let layout = PadLayout {
            step_bytes: 4,
            max_len: 2,
        };
        let long = [0u8; 12];
        let ragged = [0u8; 6];
        let mut dst = [0u8; 8];
        let mut mask = [0u8; 2];
        let err = pad_rows(&mut dst, &mut mask, &[&long], layout, &[0; 4], 1).unwrap_err();
        assert_eq!(
            err,
            KernelError::Length {
                what: "sequence 0".into(),
                expected: 8,
                got: 12
            }
        );
        assert!(pad_rows(&mut dst, &mut mask, &[&ragged], layout, &[0; 4], 1).is_err());
        assert!(
            pad_rows(&mut dst, &mut mask, &[&ragged], layout, &[0; 3], 1).is_err(),
            "pattern must divide a step"
        );
    }
}
