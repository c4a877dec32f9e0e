//! Transposing a batch of samples into columns, one per leaf of the first sample's structure, and reading
//! Python ints, floats and bools into typed buffers without a Python call per value.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyTuple};

use crate::errors::collate_error;

const OBJ: u8 = 0;
const INT: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 3;
const SEQ: u8 = 4;
const MAP: u8 = 5;

/// The structure of the first sample, as built by `fastcollate._structure`.
enum Spec<'py> {
    Leaf(u8),
    Seq(Vec<Spec<'py>>),
    /// Keys and children; `true` when every child is a leaf (see `walk_map_in_order`).
    Map(Vec<(Bound<'py, PyAny>, Spec<'py>)>, bool),
}

fn parse<'py>(spec: &Bound<'py, PyAny>) -> PyResult<Spec<'py>> {
    if let Ok(code) = spec.extract::<u8>() {
        return match code {
            OBJ | INT | FLOAT | BOOL => Ok(Spec::Leaf(code)),
            _ => Err(collate_error(
                "CollateTypeError",
                format!("unknown leaf code {code}"),
            )),
        };
    }
    let node = spec.cast::<PyTuple>()?;
    let kind: u8 = node.get_item(0)?.extract()?;
    match kind {
        SEQ => {
            let children = node.get_item(1)?.cast_into::<PyTuple>()?;
            Ok(Spec::Seq(
                children
                    .iter()
                    .map(|c| parse(&c))
                    .collect::<PyResult<_>>()?,
            ))
        }
        MAP => {
            let keys = node.get_item(1)?.cast_into::<PyTuple>()?;
            let children = node.get_item(2)?.cast_into::<PyTuple>()?;
            let mut entries = Vec::with_capacity(keys.len());
            for (key, child) in keys.iter().zip(children.iter()) {
                entries.push((key, parse(&child)?));
            }
            let flat = entries
                .iter()
                .all(|(_, child)| matches!(child, Spec::Leaf(_)));
            Ok(Spec::Map(entries, flat))
        }
        _ => Err(collate_error(
            "CollateTypeError",
            format!("unknown node kind {kind}"),
        )),
    }
}

enum Column<'py> {
    Obj(Vec<Bound<'py, PyAny>>),
    /// Native-endian int64 values, as bytes (handed to Python as they are).
    Int(Vec<u8>),
    /// Native-endian float64 values, as bytes.
    Float(Vec<u8>),
    Bool(Vec<u8>),
}

/// `Err(None)`: a scalar of another type (the facade falls back to `default_collate`, whose promotion rules
/// then apply); `Err(Some(e))`: a structural mismatch worth a clear error.
type Walk = Result<(), Option<PyErr>>;

/// One step of the path from a sample to the current node; formatted only when an error names it.
enum Step<'a, 'py> {
    Index(usize),
    Key(&'a Bound<'py, PyAny>),
}

/// Dicts with at most this many keys are tried in order (`walk_map_in_order`) before looking keys up.
const IN_ORDER_MAX_KEYS: usize = 16;

struct Walker<'a, 'py> {
    cols: Vec<Column<'py>>,
    next: usize,
    sample: usize,
    /// Record the path to the current node (only when re-walking a sample to name the place of an error).
    track: bool,
    path: Vec<Step<'a, 'py>>,
}

impl<'a, 'py> Walker<'a, 'py> {
    /// Walks `node` (a reference the caller keeps alive) along `spec`, with the C API on borrowed references:
    /// this runs once per leaf of every sample, and PyO3's owned handles cost more than the work itself. A leaf
    /// is read straight from its container's borrowed reference (reading a leaf runs no Python code, so nothing
    /// can free it meanwhile); a nested container is held by a reference of our own while it is walked.
    fn walk(&mut self, py: Python<'py>, node: *mut ffi::PyObject, spec: &'a Spec<'py>) -> Walk {
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
                Mismatch::Container,
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
                Mismatch::Container,
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

    /// `sample[key]` as `default_collate` reads it: a plain dict by lookup, a subclass through its own
    /// `__getitem__` (a lazy or transforming mapping) or `__missing__` (`defaultdict`), not the stored value. Held
    /// while walked: a lookup may run a key's `__eq__`, a subclass's `__getitem__` any code.
    fn item(
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
                Mismatch::Key,
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
    fn walk_map_in_order(
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
            Mismatch::Length,
            format!("has {len} elements, sample 0 has {expected}; every sample needs the same structure"),
        )))
    }

    fn error(&self, mismatch: Mismatch, what: String) -> PyErr {
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
        collate_error(
            mismatch.class(),
            format!("sample {}{at} {what}", self.sample),
        )
    }
}

/// How a sample's structure differs from sample 0's. Each has its own `CollateStructureError` subclass, which is
/// also the built-in `default_collate` raises in that case, so `except KeyError` / `except RuntimeError` /
/// `except TypeError` written around `default_collate` keep working.
#[derive(Clone, Copy)]
enum Mismatch {
    /// A key of sample 0 missing (KeyError).
    Key,
    /// A list or tuple of another length (RuntimeError).
    Length,
    /// Another kind of container, or none (TypeError).
    Container,
}

impl Mismatch {
    fn class(self) -> &'static str {
        match self {
            Mismatch::Key => "CollateKeyError",
            Mismatch::Length => "CollateLengthError",
            Mismatch::Container => "CollateContainerError",
        }
    }
}

/// Appends leaf `node` (a live object) to `col`; `Err(None)` when a scalar column meets a value of another type.
/// Runs no Python code: type checks compare the exact type object, then read with the matching API.
fn read_leaf<'py>(py: Python<'py>, col: &mut Column<'py>, node: *mut ffi::PyObject) -> Walk {
    // SAFETY: `node` is live (the callers' contract); each read matches the exact type just checked.
    unsafe {
        let kind = ffi::Py_TYPE(node);
        match col {
            Column::Obj(v) => v.push(Bound::from_borrowed_ptr(py, node)),
            Column::Int(v) => {
                if kind != &raw mut ffi::PyLong_Type {
                    return Err(None);
                }
                let value = ffi::PyLong_AsLongLong(node);
                if value == -1 && !ffi::PyErr_Occurred().is_null() {
                    ffi::PyErr_Clear(); // too large for int64: default_collate decides what happens
                    return Err(None);
                }
                v.extend_from_slice(&value.to_ne_bytes());
            }
            Column::Float(v) => {
                if kind != &raw mut ffi::PyFloat_Type {
                    return Err(None);
                }
                v.extend_from_slice(&ffi::PyFloat_AsDouble(node).to_ne_bytes());
            }
            Column::Bool(v) => {
                if kind != &raw mut ffi::PyBool_Type {
                    return Err(None);
                }
                v.push(u8::from(node == ffi::Py_True()));
            }
        }
    }
    Ok(())
}

/// The common case, without recursion: `spec` is a dict of at most `IN_ORDER_MAX_KEYS` leaves and every sample
/// is an exact dict with exactly those key objects in that order, or `spec` is a sequence of as many leaves and
/// every sample an exact tuple or list of that length; every scalar has its column's exact type. None as soon
/// as a sample differs in any way: the general walker then starts over (and names the error, or falls back).
///
/// Nothing here runs Python code (`PyDict_Next`, exact-type reads), so the borrowed values stay alive.
fn flat_columns<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    spec: &Spec<'py>,
    codes: &[u8],
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

/// Fills `slots` with the values of dict `node` as `PyDict_Next` yields them (borrowed references); false unless
/// its keys are exactly `keys`: the same objects, in the same order, and no others.
///
/// # Safety
/// `node` must be a live dict.
unsafe fn values_in_order(
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

fn new_columns<'py>(codes: &[u8], n: usize) -> Vec<Column<'py>> {
    codes
        .iter()
        .map(|&code| match code {
            INT => Column::Int(Vec::with_capacity(n * 8)),
            FLOAT => Column::Float(Vec::with_capacity(n * 8)),
            BOOL => Column::Bool(Vec::with_capacity(n)),
            _ => Column::Obj(Vec::with_capacity(n)),
        })
        .collect()
}

/// True for the `CollateStructureError`s the walker raises itself (worth a second walk that names the place).
fn is_structure_error(py: Python<'_>, err: &PyErr) -> bool {
    py.import("fastcollate.errors")
        .and_then(|module| module.getattr("CollateStructureError"))
        .and_then(|cls| Ok(cls.cast_into::<pyo3::types::PyType>()?))
        .is_ok_and(|cls| err.is_instance(py, &cls))
}

fn type_name(py: Python<'_>, node: *mut ffi::PyObject) -> String {
    // SAFETY: `node` is a live object.
    let node = unsafe { Bound::from_borrowed_ptr(py, node) };
    node.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

fn leaves(spec: &Spec<'_>, out: &mut Vec<u8>) {
    match spec {
        Spec::Leaf(code) => out.push(*code),
        Spec::Seq(children) => children.iter().for_each(|c| leaves(c, out)),
        Spec::Map(entries, _) => entries.iter().for_each(|(_, c)| leaves(c, out)),
    }
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
                if !is_structure_error(py, &err) {
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

fn columns_to_python<'py>(py: Python<'py>, cols: Vec<Column<'py>>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for col in cols {
        match col {
            Column::Obj(v) => out.append(PyList::new(py, v)?)?,
            Column::Int(v) | Column::Float(v) | Column::Bool(v) => {
                out.append(PyByteArray::new(py, &v))?
            }
        }
    }
    Ok(out)
}
