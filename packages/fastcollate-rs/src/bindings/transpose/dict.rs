//! Dict samples: values read in key order without lookups when the keys are sample 0's own objects, else by
//! lookup as `default_collate` does.

use pyo3::ffi;
use pyo3::prelude::*;

use super::spec::Spec;
use super::walker::Walker;
use super::{Walk, IN_ORDER_MAX_KEYS};
use crate::errors::ErrorKind;

impl<'a, 'py> Walker<'a, 'py> {
    /// `sample[key]` as `default_collate` reads it: a plain dict by lookup, a subclass through its own
    /// `__getitem__` (a lazy or transforming mapping) or `__missing__` (`defaultdict`), not the stored value. Held
    /// while walked: a lookup may run a key's `__eq__`, a subclass's `__getitem__` any code.
    pub(super) fn item(
        &self,
        py: Python<'py>,
        node: *mut ffi::PyObject,
        key: &Bound<'py, PyAny>,
        exact: bool,
    ) -> Result<Bound<'py, PyAny>, Option<PyErr>> {
        // SAFETY: `node` is a live dict (a subclass when not `exact`) and `key` a live object; PyDict_GetItemWithError
        // returns a borrowed reference (taken as our own here), PyObject_GetItem a new one; NULL from either sets an
        // error, except a plain dict's missing key.
        let value = unsafe {
            if exact {
                let value = ffi::PyDict_GetItemWithError(node, key.as_ptr());
                if !value.is_null() {
                    ffi::Py_IncRef(value);
                }
                value
            } else {
                ffi::PyObject_GetItem(node, key.as_ptr())
            }
        };
        if !value.is_null() {
            // SAFETY: `value` is a new (or just taken) reference, owned from here on.
            return Ok(unsafe { Bound::from_owned_ptr(py, value) });
        }
        let missing = || {
            Err(Some(self.error(
                ErrorKind::Key,
                "is missing (sample 0 has this key)".into(),
            )))
        };
        // SAFETY: plain error-state query.
        if exact && unsafe { ffi::PyErr_Occurred().is_null() } {
            return missing();
        }
        let err = PyErr::fetch(py);
        if !exact && err.is_instance_of::<pyo3::exceptions::PyKeyError>(py) {
            return missing();
        }
        Err(Some(err))
    }

    /// Walks the values of dict `node` as `PyDict_Next` yields them when its keys are exactly the spec's, as the
    /// same objects in the same order (dicts built by the same code share their key strings): no hashing and no
    /// lookups. None when they are not; the caller then looks each key up, which also handles reordered or extra
    /// keys as `default_collate` does.
    pub(super) fn walk_map_in_order(
        &mut self,
        py: Python<'py>,
        node: *mut ffi::PyObject,
        entries: &'a [(Bound<'py, PyAny>, Spec<'py>)],
        flat: bool,
    ) -> Option<Walk> {
        if entries.len() > IN_ORDER_MAX_KEYS {
            return None;
        }
        let mut values = [std::ptr::null_mut::<ffi::PyObject>(); IN_ORDER_MAX_KEYS];
        // SAFETY: `node` is a live dict (checked by the caller).
        let keys = entries.iter().map(|(key, _)| key.as_ptr());
        if !unsafe { values_in_order(node, keys, &mut values) } {
            return None;
        }
        if flat {
            // Leaves run no Python code: `node` cannot change, its borrowed values stay alive.
            for ((_, child), &value) in entries.iter().zip(values.iter()) {
                if let Err(err) = self.walk(py, value, child) {
                    return Some(Err(err));
                }
            }
            return Some(Ok(()));
        }
        // A nested dict may run a key's __eq__, which could mutate `node`: hold every value before walking any.
        let held: Vec<Bound<'py, PyAny>> = values[..entries.len()]
            .iter()
            // SAFETY: each value is live in `node`, unchanged since PyDict_Next (no Python code ran).
            .map(|&value| unsafe { Bound::from_borrowed_ptr(py, value) })
            .collect();
        for ((_, child), value) in entries.iter().zip(held.iter()) {
            if let Err(err) = self.walk(py, value.as_ptr(), child) {
                return Some(Err(err));
            }
        }
        Some(Ok(()))
    }
}

/// Fills `slots` with the values of dict `node` as `PyDict_Next` yields them (borrowed references); false unless
/// its keys are exactly `keys`: the same objects, in the same order, and no others.
///
/// # Safety
/// `node` must be a live dict.
pub(super) unsafe fn values_in_order(
    node: *mut ffi::PyObject,
    keys: impl ExactSizeIterator<Item = *mut ffi::PyObject>,
    slots: &mut [*mut ffi::PyObject],
) -> bool {
    // SAFETY: `node` is a live dict (the caller's contract).
    if keys.len() > slots.len()
        || unsafe { ffi::PyDict_Size(node) } != keys.len() as ffi::Py_ssize_t
    {
        return false;
    }
    let mut pos: ffi::Py_ssize_t = 0;
    for (key, slot) in keys.zip(slots.iter_mut()) {
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: as above; PyDict_Next hands out borrowed references.
        if unsafe { ffi::PyDict_Next(node, &mut pos, &mut k, slot) } == 0 || k != key {
            return false;
        }
    }
    true
}
