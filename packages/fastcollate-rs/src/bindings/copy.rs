//! Raw-address entry points. The Python facade passes `(address, nbytes)` of CPU tensors it allocated or
//! validated (dtype, shape, contiguity, device); here every length is checked against the layout, the output is
//! checked not to overlap any input, and only then do the kernels run.

use pyo3::prelude::*;

use crate::errors::{collate_error, ErrorKind};
use crate::kernels::{self, PadLayout};

/// A `(address, nbytes)` pair as passed from Python (`tensor.data_ptr()`, `tensor.nbytes`).
type Span = (usize, usize);

/// What a span is, for error messages: a name, or a name and an index (formatted only when an error is raised:
/// these checks run once per sample).
#[derive(Clone, Copy)]
enum Label<'a> {
    Named(&'a str),
    Item(&'a str, usize),
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Named(name) => f.write_str(name),
            Label::Item(name, i) => write!(f, "{name} {i}"),
        }
    }
}

fn check_span(span: Span, what: Label<'_>) -> PyResult<()> {
    let (addr, len) = span;
    if len > 0 && addr == 0 {
        return Err(collate_error(
            ErrorKind::Shape,
            format!("{what}: null address with {len} bytes"),
        ));
    }
    if addr.checked_add(len).is_none() || len > isize::MAX as usize {
        return Err(collate_error(
            ErrorKind::Shape,
            format!("{what}: {len} bytes at {addr:#x} overflow"),
        ));
    }
    Ok(())
}

fn check_disjoint(out: Span, src: Span, what: Label<'_>) -> PyResult<()> {
    let (a, alen) = out;
    let (b, blen) = src;
    if alen > 0 && blen > 0 && a < b + blen && b < a + alen {
        return Err(collate_error(
            ErrorKind::Shape,
            format!("{what} overlaps the output buffer"),
        ));
    }
    Ok(())
}

/// # Safety
/// `span` must describe memory valid for reads for the duration of the call (checked by `check_span` for
/// arithmetic, and by the caller for liveness).
unsafe fn slice<'a>(span: Span) -> &'a [u8] {
    if span.1 == 0 {
        return &[];
    }
    // SAFETY: non-null, length fits isize (check_span), live per the caller's contract.
    unsafe { std::slice::from_raw_parts(span.0 as *const u8, span.1) }
}

/// # Safety
/// As `slice`, for writes, and not aliased by any other slice in use (checked by `check_disjoint`).
unsafe fn slice_mut<'a>(span: Span) -> &'a mut [u8] {
    if span.1 == 0 {
        return &mut [];
    }
    // SAFETY: see above.
    unsafe { std::slice::from_raw_parts_mut(span.0 as *mut u8, span.1) }
}

/// Copies `len(srcs)` items of `item_bytes` each into `out`, in order.
#[pyfunction]
#[pyo3(signature = (out, srcs, item_bytes, threads))]
pub fn stack_into(
    py: Python<'_>,
    out: Span,
    srcs: Vec<usize>,
    item_bytes: usize,
    threads: usize,
) -> PyResult<()> {
    check_span(out, Label::Named("output"))?;
    for (i, &addr) in srcs.iter().enumerate() {
        let span = (addr, item_bytes);
        check_span(span, Label::Item("sample", i))?;
        check_disjoint(out, span, Label::Item("sample", i))?;
    }
    // SAFETY: spans checked above; liveness is the caller's contract (the facade holds the tensors).
    let dst = unsafe { slice_mut(out) };
    let items: Vec<&[u8]> = srcs
        .iter()
        .map(|&addr| unsafe { slice((addr, item_bytes)) })
        .collect();
    py.detach(|| kernels::stack(dst, &items, item_bytes, threads))?;
    Ok(())
}

/// Pads sequence `i` (`lengths[i]` steps at `srcs[i]`; `lengths` as native-endian int64 bytes) into row `i` of
/// `out` (`max_len` steps), writing `mask`.
#[pyfunction]
#[pyo3(signature = (out, mask, srcs, lengths, step_bytes, max_len, pattern, threads))]
#[allow(clippy::too_many_arguments)]
pub fn pad_into(
    py: Python<'_>,
    out: Span,
    mask: Span,
    srcs: Vec<usize>,
    lengths: Vec<u8>,
    step_bytes: usize,
    max_len: usize,
    pattern: Vec<u8>,
    threads: usize,
) -> PyResult<()> {
    check_span(out, Label::Named("output"))?;
    check_span(mask, Label::Named("mask"))?;
    check_disjoint(out, mask, Label::Named("mask"))?;
    if lengths.len() != srcs.len() * 8 {
        return Err(collate_error(
            ErrorKind::Shape,
            format!(
                "{} sequence addresses but {} bytes of int64 lengths",
                srcs.len(),
                lengths.len()
            ),
        ));
    }
    let mut spans = Vec::with_capacity(srcs.len());
    for (i, (&addr, raw)) in srcs.iter().zip(lengths.chunks_exact(8)).enumerate() {
        let len = i64::from_ne_bytes(raw.try_into().expect("chunks of 8"));
        let Some(bytes) = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_mul(step_bytes))
        else {
            return Err(collate_error(
                ErrorKind::Shape,
                format!("sequence {i}: {len} steps overflow"),
            ));
        };
        spans.push((addr, bytes));
    }
    for (i, &span) in spans.iter().enumerate() {
        check_span(span, Label::Item("sequence", i))?;
        check_disjoint(out, span, Label::Item("sequence", i))?;
        check_disjoint(mask, span, Label::Item("sequence", i))?;
    }
    // SAFETY: spans checked above; the facade keeps every tensor alive for the call.
    let (dst, mask) = unsafe { (slice_mut(out), slice_mut(mask)) };
    let items: Vec<&[u8]> = spans.iter().map(|&span| unsafe { slice(span) }).collect();
    let layout = PadLayout {
        step_bytes,
        max_len,
    };
    py.detach(|| kernels::pad_rows(dst, mask, &items, layout, &pattern, threads))?;
    Ok(())
}

/// Copies rows `indices` (Python-style, negatives count from the end) of `src` into `out`.
#[pyfunction]
#[pyo3(signature = (out, src, row_bytes, indices, threads))]
pub fn gather_into(
    py: Python<'_>,
    out: Span,
    src: Span,
    row_bytes: usize,
    indices: Vec<i64>,
    threads: usize,
) -> PyResult<()> {
    check_span(out, Label::Named("output"))?;
    check_span(src, Label::Named("dataset"))?;
    check_disjoint(out, src, Label::Named("dataset"))?;
    let rows = src.1.checked_div(row_bytes).unwrap_or(0);
    let resolved = kernels::resolve_indices(&indices, rows)?;
    // SAFETY: spans checked above; the dataset and output tensors are held by the caller.
    let (dst, src) = unsafe { (slice_mut(out), slice(src)) };
    py.detach(|| kernels::gather_rows(dst, src, row_bytes, &resolved, threads))?;
    Ok(())
}

/// Faults in every page of `span`, fresh memory the caller just mapped (a new shared-memory segment), in one
/// `madvise(MADV_POPULATE_WRITE)` call instead of one page fault per 4 KiB during the copy that follows: a third
/// less time on a 38 MB segment here. Contents are unchanged. False where the kernel (before Linux 5.14) or the
/// platform cannot, and nothing happened.
#[pyfunction]
pub fn prefault(py: Python<'_>, span: Span) -> PyResult<bool> {
    check_span(span, Label::Named("prefault"))?;
    let (addr, len) = span;
    if len == 0 {
        return Ok(true);
    }
    Ok(py.detach(|| populate_write(addr, len)))
}

#[cfg(target_os = "linux")]
fn populate_write(addr: usize, len: usize) -> bool {
    const MADV_POPULATE_WRITE: libc::c_int = 23; // linux/mman.h, Linux 5.14
                                                 // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = addr - addr % page;
    let end = (addr + len).div_ceil(page) * page;
    // SAFETY: MADV_POPULATE_WRITE only faults pages in (as a write to each would, without writing), so it cannot
    // change memory contents; an address range that is not mapped fails with ENOMEM, and nothing happens.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_POPULATE_WRITE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_addr: usize, _len: usize) -> bool {
    false
}

/// The number of hardware threads (the default ceiling for copy threads).
#[pyfunction]
pub fn max_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
