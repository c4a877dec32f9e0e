//! Columns: one per leaf of the plan, objects kept as they are, scalars read into typed buffers without a Python
//! call per value.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList};

use super::Walk;
use crate::protocol::Code;

pub(super) enum Column<'py> {
    Obj(Vec<Bound<'py, PyAny>>),
    /// Native-endian int64 values, as bytes (handed to Python as they are).
    Int(Vec<u8>),
    /// Native-endian float64 values, as bytes.
    Float(Vec<u8>),
    Bool(Vec<u8>),
}

pub(super) fn new_columns<'py>(codes: &[Code], n: usize) -> Vec<Column<'py>> {
    codes
        .iter()
        .map(|&code| match code {
            Code::Int => Column::Int(Vec::with_capacity(n * 8)),
            Code::Float => Column::Float(Vec::with_capacity(n * 8)),
            Code::Bool => Column::Bool(Vec::with_capacity(n)),
            _ => Column::Obj(Vec::with_capacity(n)),
        })
        .collect()
}

/// Appends leaf `node` (a live object) to `col`; `Err(None)` when a scalar column meets a value of another type.
/// Runs no Python code: type checks compare the exact type object, then read with the matching API.
pub(super) fn read_leaf<'py>(
    py: Python<'py>,
    col: &mut Column<'py>,
    node: *mut ffi::PyObject,
) -> Walk {
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

pub(super) fn columns_to_python<'py>(
    py: Python<'py>,
    cols: Vec<Column<'py>>,
) -> PyResult<Bound<'py, PyList>> {
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
