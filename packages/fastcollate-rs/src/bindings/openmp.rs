//! The calling thread's OpenMP thread count, in the OpenMP runtime that torch itself loaded.
//!
//! `torch.stack` of many small rows takes torch's parallel path once the batch has `GRAIN_SIZE` (32,768) elements
//! or more, and its per-tensor cost there is a quarter higher than on its serial path. torch picks the serial path
//! when `at::get_num_threads()` is 1, which with torch's OpenMP backend is `omp_get_max_threads()`: a per-thread
//! setting (the `nthreads-var` ICV of the current task). Setting it on the calling thread for one stack, and back
//! afterwards, changes nothing for other threads, MKL, or torch's stored thread count (`torch.set_num_threads`
//! would change all three). The Python side checks that torch follows the setting before using it.

use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

type SetNumThreads = unsafe extern "C" fn(c_int);

/// `omp_set_num_threads` of the runtime last found by `bind_openmp` (null: none found yet).
static SET_NUM_THREADS: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Looks up `omp_set_num_threads` in the already loaded library `library` (torch's `_C` extension) and the
/// libraries it depends on, i.e. the OpenMP runtime torch uses (another one, e.g. a second libgomp loaded by
/// scikit-learn, is never picked). Returns whether it was found; a failed lookup keeps an earlier binding.
#[pyfunction]
pub fn bind_openmp(library: &str) -> PyResult<bool> {
    let path = CString::new(library)
        .map_err(|_| PyValueError::new_err("library path contains a NUL byte"))?;
    match lookup(&path) {
        Some(symbol) => {
            SET_NUM_THREADS.store(symbol, Ordering::Release);
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(unix)]
fn lookup(path: &CString) -> Option<*mut c_void> {
    // SAFETY: RTLD_NOLOAD only returns a handle to a library that is already loaded (loading nothing, running
    // no initialisers); dlsym searches it and its dependencies; dlclose drops the reference dlopen added, and the
    // library stays loaded because the interpreter still holds it (Python never unloads extension modules).
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"omp_set_num_threads".as_ptr());
        libc::dlclose(handle);
        (!symbol.is_null()).then_some(symbol)
    }
}

#[cfg(not(unix))]
fn lookup(_path: &CString) -> Option<*mut c_void> {
    None
}

/// Sets the calling thread's OpenMP thread count (`bind_openmp` must have found the runtime).
#[pyfunction]
pub fn set_openmp_threads(threads: i64) -> PyResult<()> {
    let threads = c_int::try_from(threads)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            PyValueError::new_err(format!("threads must be a positive int, got {threads}"))
        })?;
    let symbol = SET_NUM_THREADS.load(Ordering::Acquire);
    if symbol.is_null() {
        return Err(PyRuntimeError::new_err(
            "no OpenMP runtime bound: call bind_openmp first and check it returned True",
        ));
    }
    // SAFETY: the symbol is `omp_set_num_threads` of an OpenMP runtime that stays loaded, declared
    // `void omp_set_num_threads(int)` by the OpenMP standard; any positive count is valid.
    unsafe {
        let set = std::mem::transmute::<*mut c_void, SetNumThreads>(symbol);
        set(threads);
    }
    Ok(())
}
