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
    Map(Vec<(Bound<'py, PyAny>, Spec<'py>)>),
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
            Ok(Spec::Map(entries))
        }
        _ => Err(collate_error(
            "CollateTypeError",
            format!("unknown node kind {kind}"),
        )),
    }
}

enum Column<'py> {
    Obj(Vec<Bound<'py, PyAny>>),
    Int(Vec<i64>),
    Float(Vec<f64>),
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

struct Walker<'a, 'py> {
    cols: Vec<Column<'py>>,
    next: usize,
    sample: usize,
    path: Vec<Step<'a, 'py>>,
}

impl<'a, 'py> Walker<'a, 'py> {
    /// Walks `node` (a reference the caller keeps alive) along `spec`, with the C API on borrowed references:
    /// this runs once per leaf of every sample, and PyO3's owned handles cost more than the work itself.
    fn walk(&mut self, py: Python<'py>, node: *mut ffi::PyObject, spec: &'a Spec<'py>) -> Walk {
        match spec {
            Spec::Leaf(_) => self.leaf(py, node),
            Spec::Seq(children) => {
                // SAFETY: `node` is a live object (held by the batch list or by our own reference below).
                let (is_list, is_tuple) =
                    unsafe { (ffi::PyList_Check(node) != 0, ffi::PyTuple_Check(node) != 0) };
                if !is_list && !is_tuple {
                    return Err(Some(self.error(format!(
                        "is a {}, expected a list or tuple",
                        type_name(py, node)
                    ))));
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
                    // SAFETY: 0 <= i < len; the item is borrowed, so we own a reference while walking it (a dict
                    // lookup below may run Python code that mutates the container).
                    let item = unsafe {
                        let item = if is_list {
                            ffi::PyList_GetItem(node, i as ffi::Py_ssize_t)
                        } else {
                            ffi::PyTuple_GetItem(node, i as ffi::Py_ssize_t)
                        };
                        if item.is_null() {
                            return Err(Some(PyErr::fetch(py)));
                        }
                        Bound::from_borrowed_ptr(py, item)
                    };
                    self.path.push(Step::Index(i));
                    self.walk(py, item.as_ptr(), child)?;
                    self.path.pop();
                }
                Ok(())
            }
            Spec::Map(entries) => {
                // SAFETY: `node` is live (see above).
                if unsafe { ffi::PyDict_Check(node) } == 0 {
                    return Err(Some(
                        self.error(format!("is a {}, expected a dict", type_name(py, node))),
                    ));
                }
                for (key, child) in entries {
                    self.path.push(Step::Key(key));
                    // SAFETY: `node` is a dict, `key` a live object; the result is borrowed, so take a reference.
                    let item = unsafe {
                        let item = ffi::PyDict_GetItemWithError(node, key.as_ptr());
                        if item.is_null() {
                            if !ffi::PyErr_Occurred().is_null() {
                                return Err(Some(PyErr::fetch(py)));
                            }
                            return Err(Some(
                                self.error("is missing (sample 0 has this key)".into()),
                            ));
                        }
                        Bound::from_borrowed_ptr(py, item)
                    };
                    self.walk(py, item.as_ptr(), child)?;
                    self.path.pop();
                }
                Ok(())
            }
        }
    }

    fn leaf(&mut self, py: Python<'py>, node: *mut ffi::PyObject) -> Walk {
        let col = &mut self.cols[self.next];
        self.next += 1;
        // SAFETY: `node` is live; type checks compare the exact type object, then read with the matching API.
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
                    v.push(value);
                }
                Column::Float(v) => {
                    if kind != &raw mut ffi::PyFloat_Type {
                        return Err(None);
                    }
                    v.push(ffi::PyFloat_AsDouble(node));
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

    fn check_len(&self, len: usize, expected: usize) -> Walk {
        if len == expected {
            return Ok(());
        }
        Err(Some(self.error(format!(
            "has {len} elements, sample 0 has {expected}; every sample needs the same structure"
        ))))
    }

    fn error(&self, what: String) -> PyErr {
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
            "CollateStructureError",
            format!("sample {}{at} {what}", self.sample),
        )
    }
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
        Spec::Map(entries) => entries.iter().for_each(|(_, c)| leaves(c, out)),
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
    let samples: Vec<Bound<'py, PyAny>> = if let Ok(list) = batch.cast::<PyList>() {
        list.iter().collect()
    } else {
        batch.cast::<PyTuple>()?.iter().collect()
    };
    let mut codes = Vec::new();
    leaves(&spec, &mut codes);
    let n = samples.len();
    let cols: Vec<Column<'py>> = codes
        .iter()
        .map(|&code| match code {
            INT => Column::Int(Vec::with_capacity(n)),
            FLOAT => Column::Float(Vec::with_capacity(n)),
            BOOL => Column::Bool(Vec::with_capacity(n)),
            _ => Column::Obj(Vec::with_capacity(n)),
        })
        .collect();
    let mut walker = Walker {
        cols,
        next: 0,
        sample: 0,
        path: Vec::new(),
    };
    for (i, sample) in samples.iter().enumerate() {
        walker.next = 0;
        walker.sample = i;
        walker.path.clear();
        match walker.walk(py, sample.as_ptr(), &spec) {
            Ok(()) => {}
            Err(None) => return Ok(None),
            Err(Some(err)) => return Err(err),
        }
    }
    let cols = walker.cols;
    let out = PyList::empty(py);
    for col in cols {
        match col {
            Column::Obj(v) => out.append(PyList::new(py, v)?)?,
            Column::Int(v) => out.append(PyByteArray::new(
                py,
                &v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>(),
            ))?,
            Column::Float(v) => out.append(PyByteArray::new(
                py,
                &v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>(),
            ))?,
            Column::Bool(v) => out.append(PyByteArray::new(py, &v))?,
        }
    }
    Ok(Some(out))
}
