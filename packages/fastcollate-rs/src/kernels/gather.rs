//! Gathering rows of an in-memory dataset by index: one batch in one call instead of one `__getitem__` per sample.

use super::{checked_mul, memcpy, parallel_units, threads_for, KernelError};

/// Normalises Python-style indices (negative counts from the end) against `len` rows, naming the first bad one.
pub fn resolve_indices(indices: &[i64], len: usize) -> Result<Vec<usize>, KernelError> {
    let signed_len = i64::try_from(len).map_err(|_| KernelError::Overflow("dataset length"))?;
    indices
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let resolved = if index < 0 { index + signed_len } else { index };
            if (0..signed_len).contains(&resolved) {
                Ok(resolved as usize)
            } else {
                Err(KernelError::Index {
                    position,
                    index,
                    len,
                })
            }
        })
        .collect()
}

/// Copies `src` rows `indices` (already resolved, each `< src.len() / row_bytes`) into consecutive rows of `dst`.
pub fn gather_rows(
    dst: &mut [u8],
    src: &[u8],
    row_bytes: usize,
    indices: &[usize],
    threads: usize,
) -> Result<(), KernelError> {
    let total = checked_mul(indices.len(), row_bytes, "gathered batch size")?;
    if dst.len() != total {
        return Err(KernelError::Length {
            what: "output buffer".into(),
            expected: total,
            got: dst.len(),
        });
    }
    let rows = src.len().checked_div(row_bytes).unwrap_or(0);
    if row_bytes == 0 || src.len() % row_bytes != 0 {
        return Err(KernelError::Length {
            what: "dataset buffer".into(),
            expected: rows * row_bytes,
            got: src.len(),
        });
    }
    if let Some((position, &index)) = indices.iter().enumerate().find(|(_, &i)| i >= rows) {
        return Err(KernelError::Index {
            position,
            index: index as i64,
            len: rows,
        });
    }
    if total == 0 {
        return Ok(());
    }
    let streaming = total >= memcpy::STREAMING_MIN_BYTES;
    parallel_units(
        dst,
        row_bytes,
        threads_for(total, threads),
        |range, chunk| {
            for (&index, out) in indices[range].iter().zip(chunk.chunks_exact_mut(row_bytes)) {
                memcpy::copy(
                    out,
                    &src[index * row_bytes..(index + 1) * row_bytes],
                    streaming,
                );
            }
            memcpy::fence(streaming);
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_in_index_order() {
        let src: Vec<u8> = (0..30).collect(); // 10 rows of 3 bytes
        let idx = resolve_indices(&[9, 0, -1, 4, 4], 10).unwrap();
        let mut dst = vec![0u8; 15];
        gather_rows(&mut dst, &src, 3, &idx, 1).unwrap();
        assert_eq!(
            dst,
            vec![27, 28, 29, 0, 1, 2, 27, 28, 29, 12, 13, 14, 12, 13, 14]
        );
    }

    #[test]
    fn threaded_gather_equals_single_threaded() {
        let src: Vec<u8> = (0..(1 << 22)).map(|i| (i % 251) as u8).collect();
        let idx: Vec<usize> = (0..2048).map(|i| (i * 7919) % 8192).collect();
        let mut one = vec![0u8; 2048 * 512];
        let mut four = vec![0u8; 2048 * 512];
        gather_rows(&mut one, &src, 512, &idx, 1).unwrap();
        gather_rows(&mut four, &src, 512, &idx, 4).unwrap();
        assert!(one == four);
    }

    #[test]
    fn names_the_first_out_of_range_index() {
        assert_eq!(
            resolve_indices(&[0, 5, 10], 10),
            Err(KernelError::Index {
                position: 2,
                index: 10,
                len: 10
            })
        );
        assert_eq!(
            resolve_indices(&[-11], 10),
            Err(KernelError::Index {
                position: 0,
                index: -11,
                len: 10
            })
        );
        let mut dst = [0u8; 3];
        assert!(matches!(
            gather_rows(&mut dst, &[0u8; 6], 3, &[2], 1),
            Err(KernelError::Index { .. })
        ));
    }
}
