//! Shared-memory segments for worker-fed loaders (`fastcollate._slots`): files in /dev/shm mapped with `mmap`,
//! grown with `posix_fallocate` (so a full /dev/shm is an `OSError` here, never a SIGBUS on a later write), atomic
//! slot states, and DLPack capsules through which torch sees a slot as a tensor whose release is a plain atomic
//! store (no GIL, from whichever thread frees the last view).
//!
//! The segments are mapped and unlinked here and in `_slots.py`, not through `multiprocessing.shared_memory`,
//! whose resource tracker (Python < 3.13) unlinks a segment when any process that attached to it exits.

use std::ffi::{c_void, CStr};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

/// A mapping, unmapped when the last holder (a `Segment`, or a tensor made from one) is gone.
struct Mapping {
    addr: usize,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `addr`/`len` are exactly what mmap returned; nothing holds the mapping any more.
            unsafe { libc::munmap(self.addr as *mut c_void, self.len) };
        }
    }
}

impl Mapping {
    fn atomic(&self, offset: usize) -> PyResult<&AtomicU32> {
        if offset % 4 != 0 || offset.checked_add(4).map_or(true, |end| end > self.len) {
            return Err(PyValueError::new_err(format!(
                "state offset {offset} is outside the {}-byte segment or not 4-aligned",
                self.len
            )));
        }
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `self`.
        Ok(unsafe { &*((self.addr + offset) as *const AtomicU32) })
    }
}

/// A shared-memory file mapped into this process (read and write, `MAP_SHARED`).
#[pyclass(frozen, module = "fastcollate._native")]
pub struct Segment {
    map: Arc<Mapping>,
}

fn os_error(what: &str, path: &str, err: std::io::Error) -> PyErr {
    let code = err.raw_os_error().unwrap_or(0);
    PyOSError::new_err((code, format!("{what} {path}: {err}")))
}

#[pymethods]
impl Segment {
    /// Maps the whole file at `path` (created when `create`), first grown to at least `min_len` bytes with the
    /// space reserved (`posix_fallocate`: on tmpfs this takes the pages, so running out of space fails here).
    #[staticmethod]
    fn open(py: Python<'_>, path: &str, min_len: usize, create: bool) -> PyResult<Segment> {
        py.detach(|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .mode(0o600)
                .open(path)
                .map_err(|e| os_error("cannot open", path, e))?;
            let fd = file.as_raw_fd();
            let mut len = file
                .metadata()
                .map_err(|e| os_error("cannot stat", path, e))?
                .len() as usize;
            if len < min_len {
                let size = libc::off_t::try_from(min_len)
                    .map_err(|_| PyValueError::new_err(format!("{min_len} bytes is too large")))?;
                let rc = reserve(fd, size);
                if rc != 0 {
                    let err = std::io::Error::from_raw_os_error(rc);
                    return Err(os_error(
                        &format!("cannot reserve {min_len} bytes for"),
                        path,
                        err,
                    ));
                }
                len = min_len;
            }
            let addr = if len == 0 {
                0
            } else {
                // SAFETY: mapping a file we opened read-write, over its current length.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(os_error(
                        "cannot map",
                        path,
                        std::io::Error::last_os_error(),
                    ));
                }
                p as usize
            };
            Ok(Segment {
                map: Arc::new(Mapping { addr, len }),
            })
        })
    }

    /// The mapping's address.
    #[getter]
    fn address(&self) -> usize {
        self.map.addr
    }

    /// The mapping's length in bytes (the file's size when it was mapped).
    #[getter]
    fn nbytes(&self) -> usize {
        self.map.len
    }

    /// Sets the u32 at byte `offset` from `current` to `new` if it holds `current`; whether it did.
    fn swap_if(&self, offset: usize, current: u32, new: u32) -> PyResult<bool> {
        let cell = self.map.atomic(offset)?;
        Ok(cell
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok())
    }

    /// The u32 at byte `offset`.
    fn load(&self, offset: usize) -> PyResult<u32> {
        Ok(self.map.atomic(offset)?.load(Ordering::Acquire))
    }

    /// Stores `value` in the u32 at byte `offset`.
    fn store(&self, offset: usize, value: u32) -> PyResult<()> {
        self.map.atomic(offset)?.store(value, Ordering::Release);
        Ok(())
    }

    /// A DLPack capsule (`torch.from_dlpack`) of the first `nbytes` bytes as a 1-D uint8 CPU tensor, which keeps
    /// this mapping alive. With `release=(state, offset, value)`, freeing the tensor's memory stores `value` in
    /// the u32 at `offset` of the segment `state`.
    #[pyo3(signature = (nbytes, release=None))]
    fn dlpack(
        &self,
        py: Python<'_>,
        nbytes: usize,
        release: Option<(PyRef<'_, Segment>, usize, u32)>,
    ) -> PyResult<Py<PyAny>> {
        if nbytes > self.map.len || nbytes > i64::MAX as usize {
            return Err(PyValueError::new_err(format!(
                "{nbytes} bytes asked of a {}-byte segment",
                self.map.len
            )));
        }
        let release = match release {
            Some((state, offset, value)) => {
                state.map.atomic(offset)?;
                Some((Arc::clone(&state.map), offset, value))
            }
            None => None,
        };
        let data = if self.map.len == 0 {
            std::ptr::NonNull::<u8>::dangling().as_ptr() as *mut c_void
        } else {
            self.map.addr as *mut c_void
        };
        let mut ctx = Box::new(Ctx {
            managed: DLManagedTensor {
                dl_tensor: DLTensor {
                    data,
                    device: DLDevice {
                        device_type: 1, // kDLCPU
                        device_id: 0,
                    },
                    ndim: 1,
                    dtype: DLDataType {
                        code: 1, // kDLUInt
                        bits: 8,
                        lanes: 1,
                    },
                    shape: std::ptr::null_mut(),
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_managed),
            },
            shape: [nbytes as i64],
            _map: Arc::clone(&self.map),
            release,
        });
        ctx.managed.dl_tensor.shape = ctx.shape.as_mut_ptr();
        let raw = Box::into_raw(ctx);
        // SAFETY: `raw` points at a live Ctx whose first field is the DLManagedTensor (repr(C)); on failure the
        // box is reclaimed below.
        let capsule = unsafe {
            ffi::PyCapsule_New(raw as *mut c_void, DLTENSOR.as_ptr(), Some(drop_capsule))
        };
        if capsule.is_null() {
            // SAFETY: the capsule was not made, so nothing else owns `raw`.
            drop(unsafe { Box::from_raw(raw) });
            return Err(PyErr::fetch(py));
        }
        // SAFETY: a new reference we own.
        Ok(unsafe { Bound::from_owned_ptr(py, capsule) }.unbind())
    }
}

/// Grows the file to `size` bytes with the space reserved; the error number, or 0.
#[cfg(target_os = "linux")]
fn reserve(fd: libc::c_int, size: libc::off_t) -> libc::c_int {
    // SAFETY: a valid open descriptor; posix_fallocate returns the error number (it does not set errno).
    unsafe { libc::posix_fallocate(fd, 0, size) }
}

/// Grows the file to `size` bytes (no reservation where `posix_fallocate` is missing); the error number, or 0.
#[cfg(not(target_os = "linux"))]
fn reserve(fd: libc::c_int, size: libc::off_t) -> libc::c_int {
    // SAFETY: a valid open descriptor.
    if unsafe { libc::ftruncate(fd, size) } == 0 {
        0
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    }
}

const DLTENSOR: &CStr = c"dltensor";

#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// What a capsule owns; `managed` first, so a pointer to it is a pointer to the whole.
#[repr(C)]
struct Ctx {
    managed: DLManagedTensor,
    shape: [i64; 1],
    _map: Arc<Mapping>,
    release: Option<(Arc<Mapping>, usize, u32)>,
}

/// The DLPack deleter: torch calls it when the tensor's memory is freed (any thread, GIL or not).
unsafe extern "C" fn delete_managed(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: `managed` came from Box::into_raw(Box<Ctx>) in `dlpack`, and DLPack calls the deleter once.
    let ctx = unsafe { Box::from_raw(managed as *mut Ctx) };
    if let Some((state, offset, value)) = &ctx.release {
        if let Ok(cell) = state.atomic(*offset) {
            cell.store(*value, Ordering::Release);
        }
    }
}

/// The capsule's destructor: a capsule that no consumer took (still named "dltensor") frees what it holds.
unsafe extern "C" fn drop_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule being destroyed.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, DLTENSOR.as_ptr()) == 1 {
            let managed =
                ffi::PyCapsule_GetPointer(capsule, DLTENSOR.as_ptr()) as *mut DLManagedTensor;
            delete_managed(managed);
        } else {
            ffi::PyErr_Clear();
        }
    }
}
