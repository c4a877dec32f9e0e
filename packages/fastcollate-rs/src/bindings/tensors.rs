//! Reading the addresses of a column of tensors, checking each one first: exact type, dtype, CPU, contiguous,
//! no lazy negation, and shape (all dims, or all but the first). Each check is one attribute read through the C
//! API, several times cheaper than the same check written in Python.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyTuple};

/// Addresses, dim-0 lengths as int64 bytes, and the longest length.
type Addresses<'py> = (Vec<usize>, Bound<'py, PyByteArray>, i64);

/// The addresses of `column`'s tensors, their dim-0 lengths (native-endian int64 bytes) and the longest length;
/// or None when any sample is not a plain contiguous CPU tensor of `dtype` whose shape is `shape` (dim 0 free when
/// `vary_first`), or requires grad and `allow_grad` is off. The caller then takes the slow path, which names the
/// offending sample.
#[pyfunction]
#[pyo3(signature = (column, plain, dtype, shape, *, vary_first, allow_grad))]
pub fn tensor_addresses<'py>(
    column: &Bound<'py, PyList>,
    plain: &Bound<'py, PyAny>,
    dtype: &Bound<'py, PyAny>,
    shape: Vec<i64>,
    vary_first: bool,
    allow_grad: bool,
) -> PyResult<Option<Addresses<'py>>> {
    let py = column.py();
    let mut addresses = Vec::with_capacity(column.len());
    let mut lengths: Vec<u8> = Vec::with_capacity(column.len() * 8);
    let mut longest = 0i64;
    // A 1-D sequence is checked by ndim and numel: cheaper than building its torch.Size.
    let sequence = vary_first && shape.len() == 1;
    for t in column.iter() {
        if !t.get_type().is(plain)
            || !t.getattr(intern!(py, "dtype"))?.is(dtype)
            || !t.getattr(intern!(py, "is_cpu"))?.is_truthy()?
            || (!allow_grad && t.getattr(intern!(py, "requires_grad"))?.is_truthy()?)
            || !t.call_method0(intern!(py, "is_contiguous"))?.is_truthy()?
            || t.call_method0(intern!(py, "is_neg"))?.is_truthy()?
        {
            return Ok(None);
        }
        let first = if sequence {
            if t.getattr(intern!(py, "ndim"))?.extract::<i64>()? != 1 {
                return Ok(None);
            }
            t.call_method0(intern!(py, "numel"))?.extract::<i64>()?
        } else {
            match check_shape(&t, &shape, vary_first)? {
                Some(first) => first,
                None => return Ok(None),
            }
        };
        addresses.push(
            t.call_method0(intern!(py, "data_ptr"))?
                .extract::<usize>()?,
        );
        lengths.extend_from_slice(&first.to_ne_bytes());
        longest = longest.max(first);
    }
    Ok(Some((addresses, PyByteArray::new(py, &lengths), longest)))
}

/// Dim 0 of `t` when its shape matches `shape` (dim 0 free when `vary_first`); None otherwise.
fn check_shape(t: &Bound<'_, PyAny>, shape: &[i64], vary_first: bool) -> PyResult<Option<i64>> {
    let size = t.getattr(intern!(t.py(), "shape"))?;
    let size = size.cast::<PyTuple>()?;
    if size.len() != shape.len() {
        return Ok(None);
    }
    let mut first = 1i64;
    for (d, expected) in shape.iter().enumerate() {
        let got: i64 = size.get_item(d)?.extract()?;
        if d == 0 {
            first = got;
            if vary_first {
                continue;
            }
        }
        if got != *expected {
            return Ok(None);
        }
    }
    Ok(Some(first))
}
