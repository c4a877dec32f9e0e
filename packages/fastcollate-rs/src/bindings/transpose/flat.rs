//! The common case, without recursion or Python calls: flat samples of exactly sample 0's shape.

use pyo3::ffi;
use pyo3::prelude::*;

use super::column::{new_columns, read_leaf, Column};
use super::dict::values_in_order;
use super::spec::Spec;
use super::IN_ORDER_MAX_KEYS;
use crate::protocol::Code;

/// The common case, without recursion: `spec` is a dict of at most `IN_ORDER_MAX_KEYS` leaves and every sample
/// is an exact dict with exactly those key objects in that order, or `spec` is a sequence of as many leaves and
/// every sample an exact tuple or list of that length; every scalar has its column's exact type. None as soon
/// as a sample differs in any way: the general walker then starts over (and names the error, or falls back).
///
/// Nothing here runs Python code (`PyDict_Next`, exact-type reads), so the borrowed values stay alive.
pub(super) fn flat_columns<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    spec: &Spec<'py>,
    codes: &[Code],
) -> Option<Vec<Column<'py>>> {
    let keys: Option<Vec<*mut ffi::PyObject>> = match spec {
        Spec::Map(entries, true) => Some(entries.iter().map(|(key, _)| key.as_ptr()).collect()),
        Spec::Seq(children) if children.iter().all(|c| matches!(c, Spec::Leaf(_))) => None,
        _ => return None,
    };
    let width = codes.len();
    if width > IN_ORDER_MAX_KEYS {
        return None;
    }
    let batch = batch.as_ptr();
    // SAFETY: `batch` is live; its exact type is checked before the matching API is used.
    let (is_list, n) = unsafe {
        let kind = ffi::Py_TYPE(batch);
        if kind == &raw mut ffi::PyList_Type {
            (true, ffi::PyList_Size(batch))
        } else if kind == &raw mut ffi::PyTuple_Type {
            (false, ffi::PyTuple_Size(batch))
        } else {
            return None;
        }
    };
    let mut cols = new_columns(codes, n as usize);
    let mut values = [std::ptr::null_mut::<ffi::PyObject>(); IN_ORDER_MAX_KEYS];
    let values = &mut values[..width];
    for index in 0..n {
        // SAFETY: `batch` is live and cannot change (no Python code runs here), `index` is below its length;
        // exact types are checked before the matching API is used, indices are below the checked length, and
        // PyDict_Next hands out borrowed references.
        unsafe {
            let node = if is_list {
                ffi::PyList_GetItem(batch, index)
            } else {
                ffi::PyTuple_GetItem(batch, index)
            };
            let kind = ffi::Py_TYPE(node);
            if let Some(keys) = &keys {
                if kind != &raw mut ffi::PyDict_Type
                    || !values_in_order(node, keys.iter().copied(), values)
                {
                    return None;
                }
            } else if kind == &raw mut ffi::PyTuple_Type {
                if ffi::PyTuple_Size(node) != width as ffi::Py_ssize_t {
                    return None;
                }
                for (i, slot) in values.iter_mut().enumerate() {
                    *slot = ffi::PyTuple_GetItem(node, i as ffi::Py_ssize_t);
                }
            } else if kind == &raw mut ffi::PyList_Type {
                if ffi::PyList_Size(node) != width as ffi::Py_ssize_t {
                    return None;
                }
                for (i, slot) in values.iter_mut().enumerate() {
                    *slot = ffi::PyList_GetItem(node, i as ffi::Py_ssize_t);
                }
            } else {
                return None;
            }
        }
        for (col, &value) in cols.iter_mut().zip(values.iter()) {
            if read_leaf(py, col, value).is_err() {
                return None;
            }
        }
    }
    Some(cols)
}
