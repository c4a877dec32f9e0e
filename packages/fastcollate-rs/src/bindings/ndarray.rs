//! Reading the data addresses of a column of numpy arrays straight from numpy's array object, without a
//! `torch.from_numpy` per array (~1.4 us each: a tensor, its storage and a reference to the array are built and
//! dropped again) or any Python attribute read.
//!
//! numpy's `PyArrayObject_fields` begins `PyObject_HEAD; char *data; int nd; npy_intp *dimensions;
//! npy_intp *strides; PyObject *base; PyArray_Descr *descr; int flags;` in numpy 1.x and 2.x alike: its
//! `PyArray_DATA`, `PyArray_NDIM`, `PyArray_DIMS`, `PyArray_DESCR` and `PyArray_FLAGS` are inline functions that
//! read these fields, compiled into every extension built against numpy, so numpy cannot move them. Only the object
//! header comes from Python's stable ABI. Every object is checked to be an instance of the `numpy.ndarray` passed
//! in (subclasses extend the same struct) before its fields are read, and the Python side checks once per process
//! that these reads agree with numpy's own attributes before it uses them.

use std::ffi::{c_char, c_int};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};

/// The leading fields of numpy's `PyArrayObject_fields` (numpy/ndarraytypes.h), the only ones read here.
#[repr(C)]
struct ArrayFields {
    _head: ffi::PyObject,
    data: *mut c_char,
    nd: c_int,
    dimensions: *const isize,
    _strides: *const isize,
    _base: *mut ffi::PyObject,
    descr: *mut ffi::PyObject,
    flags: c_int,
}

/// `NPY_ARRAY_C_CONTIGUOUS`: the array's bytes are one dense row-major block starting at `data`.
const C_CONTIGUOUS: c_int = 0x0001;

/// The fields of an array the caller has checked is a `numpy.ndarray`.
///
/// # Safety
/// `array` must be an instance of `numpy.ndarray` (or a subclass), alive for the returned borrow.
unsafe fn fields<'a>(array: &'a Bound<'_, PyAny>) -> &'a ArrayFields {
    // SAFETY: every ndarray instance starts with `PyArrayObject_fields` (see the module docs).
    unsafe { &*array.as_ptr().cast::<ArrayFields>() }
}

/// The data addresses of `column`'s arrays; or None unless every one is an instance of `ndarray`, C-contiguous, of
/// shape `shape` and of the very dtype object of the first (one dtype: the batch's dtype cannot change on the way,
/// and a byte-swapped or otherwise different dtype is a different object). The caller then takes the general
/// path, which converts each array and names any offending sample.
#[pyfunction]
pub fn array_addresses(
    column: &Bound<'_, PyList>,
    ndarray: &Bound<'_, PyType>,
    shape: Vec<isize>,
) -> PyResult<Option<Vec<usize>>> {
    let mut addresses = Vec::with_capacity(column.len());
    let mut descr: *mut ffi::PyObject = std::ptr::null_mut();
    for a in column.iter() {
        if !a.is_instance(ndarray)? {
            return Ok(None);
        }
        // SAFETY: `a` is an ndarray (checked above) and `column` holds it for this borrow.
        let f = unsafe { fields(&a) };
        if descr.is_null() {
            descr = f.descr;
        }
        if f.descr != descr
            || f.flags & C_CONTIGUOUS == 0
            || usize::try_from(f.nd).ok() != Some(shape.len())
            || f.data.is_null()
        {
            return Ok(None);
        }
        if !shape.is_empty() {
            // SAFETY: numpy keeps `nd` dimensions at `dimensions` for as long as the array lives.
            let dims = unsafe { std::slice::from_raw_parts(f.dimensions, shape.len()) };
            if dims != shape.as_slice() {
                return Ok(None);
            }
        }
        addresses.push(f.data as usize);
    }
    Ok(Some(addresses))
}
