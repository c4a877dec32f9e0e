//! Transposing a batch of samples into columns, one per leaf of the first sample's structure (the plan), and
//! reading Python ints, floats and bools into typed buffers without a Python call per value.

mod column;
mod dict;
mod flat;
mod spec;
mod walker;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::errors::{kind_of, ErrorKind};
use column::{columns_to_python, new_columns};
use flat::flat_columns;
use spec::{leaves, parse};
use walker::Walker;

/// `Err(None)`: a scalar of another type (the facade falls back to `default_collate`, whose promotion rules
/// then apply); `Err(Some(e))`: a structural mismatch worth a clear error.
pub(super) type Walk = Result<(), Option<PyErr>>;

/// Dicts with at most this many keys are tried in order (`walk_map_in_order`) before looking keys up.
pub(super) const IN_ORDER_MAX_KEYS: usize = 16;

pub(super) fn type_name(py: Python<'_>, node: *mut ffi::PyObject) -> String {
    // SAFETY: `node` is a live object.
    let node = unsafe { Bound::from_borrowed_ptr(py, node) };
    node.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// Returns one column per leaf of `spec` (depth first): a list of objects for object leaves, a bytearray of
/// native-endian int64 / float64 / bool values for scalar leaves; or None when a scalar leaf holds a value of
/// another type (the caller then uses `default_collate`).
#[pyfunction]
pub fn columns<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    spec: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let spec = parse(spec)?;
    let mut codes = Vec::new();
    leaves(&spec, &mut codes);
    if let Some(cols) = flat_columns(py, batch, &spec, &codes) {
        return columns_to_python(py, cols).map(Some);
    }
    let samples: Vec<Bound<'py, PyAny>> = if let Ok(list) = batch.cast::<PyList>() {
        list.iter().collect()
    } else {
        batch.cast::<PyTuple>()?.iter().collect()
    };
    let mut walker = Walker {
        cols: new_columns(&codes, samples.len()),
        next: 0,
        sample: 0,
        track: false,
        path: Vec::new(),
    };
    for (i, sample) in samples.iter().enumerate() {
        walker.next = 0;
        walker.sample = i;
        match walker.walk(py, sample.as_ptr(), &spec) {
            Ok(()) => {}
            Err(None) => return Ok(None),
            Err(Some(err)) => {
                // a mismatch the walker raised itself is worth a second walk that names the place
                if kind_of(py, &err, ErrorKind::is_structure).is_none() {
                    return Err(err); // raised by the sample's own code (a `__getitem__`): as it is, once
                }
                // Walk the sample again, recording the path this time, so that the error names the place.
                walker.next = 0;
                walker.track = true;
                walker.path.clear();
                return Err(match walker.walk(py, sample.as_ptr(), &spec) {
                    Err(Some(named)) => named,
                    _ => err,
                });
            }
        }
    }
    columns_to_python(py, walker.cols).map(Some)
}
