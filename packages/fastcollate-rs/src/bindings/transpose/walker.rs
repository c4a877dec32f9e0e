//! The general walker: every sample along the plan, with the C API on borrowed references, naming the place of a
//! structure mismatch.

use pyo3::ffi;
use pyo3::prelude::*;

use super::column::{read_leaf, Column};
use super::spec::Spec;
use super::{type_name, Walk};
use crate::errors::{collate_error, ErrorKind};

/// One step of the path from a sample to the current node; formatted only when an error names it.
pub(super) enum Step<'a, 'py> {
    Index(usize),
    Key(&'a Bound<'py, PyAny>),
}

pub(super) struct Walker<'a, 'py> {
    pub(super) cols: Vec<Column<'py>>,
    pub(super) next: usize,
    pub(super) sample: usize,
    /// Record the path to the current node (only when re-walking a sample to name the place of an error).
    pub(super) track: bool,
    pub(super) path: Vec<Step<'a, 'py>>,
}

impl<'a, 'py> Walker<'a, 'py> {
    /// Walks `node` (a reference the caller keeps alive) along `spec`, with the C API on borrowed references:
    /// this runs once per leaf of every sample, and PyO3's owned handles cost more than the work itself. A leaf
    /// is read straight from its container's borrowed reference (reading a leaf runs no Python code, so nothing
    /// can free it meanwhile); a nested container is held by a reference of our own while it is walked.
    pub(super) fn walk(
        &mut self,
        py: Python<'py>,
        node: *mut ffi::PyObject,
        spec: &'a Spec<'py>,
    ) -> Walk {
        match spec {
            Spec::Leaf(_) => self.leaf(py, node),
            Spec::Seq(children) => self.walk_seq(py, node, children),
            Spec::Map(entries, flat) => self.walk_map(py, node, entries, *flat),
        }
    }

    /// Walks `item`, a borrowed reference just read from its container.
    fn walk_child(
        &mut self,
        py: Python<'py>,
        item: *mut ffi::PyObject,
        spec: &'a Spec<'py>,
    ) -> Walk {
        if let Spec::Leaf(_) = spec {
            return self.leaf(py, item);
        }
        // SAFETY: `item` is live (just read from its container); walking a nested dict may run a key's __eq__,
        // which could mutate the container, so hold a reference of our own.
        let held = unsafe { Bound::from_borrowed_ptr(py, item) };
        self.walk(py, held.as_ptr(), spec)
    }

    fn walk_seq(
        &mut self,
        py: Python<'py>,
        node: *mut ffi::PyObject,
        children: &'a [Spec<'py>],
    ) -> Walk {
        // SAFETY: `node` is a live object; the exact types are compared first (no call), subclasses after.
        let (is_list, is_tuple) = unsafe {
            let kind = ffi::Py_TYPE(node);
            if kind == &raw mut ffi::PyTuple_Type {
                (false, true)
            } else if kind == &raw mut ffi::PyList_Type {
                (true, false)
            } else {
                (ffi::PyList_Check(node) != 0, ffi::PyTuple_Check(node) != 0)
            }
        };
        if !is_list && !is_tuple {
            return Err(Some(self.error(
                ErrorKind::Container,
                format!("is a {}, expected a list or tuple", type_name(py, node)),
            )));
        }
        // SAFETY: checked list or tuple above.
        let len = unsafe {
            if is_list {
                ffi::PyList_Size(node)
            } else {
                ffi::PyTuple_Size(node)
            }
        };
        self.check_len(len as usize, children.len())?;
        for (i, child) in children.iter().enumerate() {
            // SAFETY: 0 <= i < len (a list can shrink while a nested dict's __eq__ runs: then the call returns
            // NULL with IndexError, handled below).
            let item = unsafe {
                if is_list {
                    ffi::PyList_GetItem(node, i as ffi::Py_ssize_t)
                } else {
                    ffi::PyTuple_GetItem(node, i as ffi::Py_ssize_t)
                }
            };
            if item.is_null() {
                return Err(Some(PyErr::fetch(py)));
            }
            if self.track {
                self.path.push(Step::Index(i));
            }
            self.walk_child(py, item, child)?;
            if self.track {
                self.path.pop();
            }
        }
        Ok(())
    }

    fn walk_map(
        &mut self,
        py: Python<'py>,
        node: *mut ffi::PyObject,
        entries: &'a [(Bound<'py, PyAny>, Spec<'py>)],
        flat: bool,
    ) -> Walk {
        // SAFETY: `node` is live (see `walk`); the exact type is compared first (no call).
        let exact = unsafe { ffi::Py_TYPE(node) == &raw mut ffi::PyDict_Type };
        if !exact && unsafe { ffi::PyDict_Check(node) } == 0 {
            return Err(Some(self.error(
                ErrorKind::Container,
                format!("is a {}, expected a dict", type_name(py, node)),
            )));
        }
        if exact && !self.track {
            if let Some(walked) = self.walk_map_in_order(py, node, entries, flat) {
                return walked;
            }
        }
        for (key, child) in entries {
            if self.track {
                self.path.push(Step::Key(key));
            }
            let value = self.item(py, node, key, exact)?;
            self.walk(py, value.as_ptr(), child)?;
            if self.track {
                self.path.pop();
            }
        }
        Ok(())
    }

    fn leaf(&mut self, py: Python<'py>, node: *mut ffi::PyObject) -> Walk {
        let col = &mut self.cols[self.next];
        self.next += 1;
        read_leaf(py, col, node)
    }

    fn check_len(&self, len: usize, expected: usize) -> Walk {
        if len == expected {
            return Ok(());
        }
        Err(Some(self.error(
            ErrorKind::Length,
            format!("has {len} elements, sample 0 has {expected}; every sample needs the same structure"),
        )))
    }

    pub(super) fn error(&self, mismatch: ErrorKind, what: String) -> PyErr {
        let mut at = String::new();
        for step in &self.path {
            match step {
                Step::Index(i) => at.push_str(&format!("[{i}]")),
                Step::Key(key) => at.push_str(&format!(
                    "[{}]",
                    key.repr().map_or_else(|_| "?".into(), |r| r.to_string())
                )),
            }
        }
        let at = if at.is_empty() {
            at
        } else {
            format!(" at {at}")
        };
        collate_error(mismatch, format!("sample {}{at} {what}", self.sample))
    }
}
