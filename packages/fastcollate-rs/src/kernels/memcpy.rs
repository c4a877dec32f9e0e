//! Byte copies for large batches: non-temporal (streaming) stores skip the read-for-ownership of each destination
//! cache line, so a copy much larger than the caches moves a third less memory traffic.

/// Batches at least this large are written with streaming stores (below it, the output may well stay in cache
/// for its consumer, and regular stores are as fast).
pub const STREAMING_MIN_BYTES: usize = 4 << 20;

/// Copies `src` into `dst` (equal lengths), with streaming stores when `streaming` is set.
#[inline]
pub fn copy(dst: &mut [u8], src: &[u8], streaming: bool) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if streaming && dst.len() >= 256 {
        stream_copy(dst, src);
        return;
    }
    let _ = streaming;
    dst.copy_from_slice(src);
}

/// Orders the streaming stores of this thread before anything it does next (call once per thread).
#[inline]
pub fn fence(streaming: bool) {
    #[cfg(target_arch = "x86_64")]
    if streaming {
        // SAFETY: SSE2 is part of the x86_64 baseline; sfence has no memory operands.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    let _ = streaming;
}

#[cfg(target_arch = "x86_64")]
fn stream_copy(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    // Align the destination to 16 bytes with a plain copy of the head.
    let head = dst.as_ptr().align_offset(16).min(dst.len());
    let (dst_head, dst_body) = dst.split_at_mut(head);
    let (src_head, src_body) = src.split_at(head);
    dst_head.copy_from_slice(src_head);
    let blocks = dst_body.len() / 64;
    let body = blocks * 64;
    let d = dst_body.as_mut_ptr();
    let s = src_body.as_ptr();
    for i in 0..blocks {
        // SAFETY: i * 64 + 64 <= body <= len of both slices; `d + head` is 16-byte aligned, so every `d + i*64 + k*16`
        // is too (required by _mm_stream_si128); loads are unaligned-safe. SSE2 is baseline on x86_64.
        unsafe {
            let sp = s.add(i * 64) as *const __m128i;
            let dp = d.add(i * 64) as *mut __m128i;
            let a = _mm_loadu_si128(sp);
            let b = _mm_loadu_si128(sp.add(1));
            let c = _mm_loadu_si128(sp.add(2));
            let e = _mm_loadu_si128(sp.add(3));
            _mm_stream_si128(dp, a);
            _mm_stream_si128(dp.add(1), b);
            _mm_stream_si128(dp.add(2), c);
            _mm_stream_si128(dp.add(3), e);
        }
    }
    dst_body[body..].copy_from_slice(&src_body[body..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_copy_equals_plain_copy_at_every_alignment_and_length() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
        for offset in 0..17 {
            for len in [0, 1, 63, 64, 255, 256, 257, 1000, 4000] {
                let mut buf = vec![0u8; len + 32];
                copy(&mut buf[offset..offset + len], &src[3..3 + len], true);
                fence(true);
                assert_eq!(
                    &buf[offset..offset + len],
                    &src[3..3 + len],
                    "offset {offset} len {len}"
                );
                assert!(
                    buf[..offset].iter().all(|&b| b == 0)
                        && buf[offset + len..].iter().all(|&b| b == 0)
                );
            }
        }
    }
}
