//! The one place where Rust errors become Python exceptions: the classes live in `fastcollate.errors`
//! (so `except ValueError` / `except IndexError` keep working), named by [`ErrorKind`] and looked up only when an
//! error happens.

use pyo3::prelude::*;

use crate::kernels::KernelError;
pub use crate::protocol::ErrorKind;

/// Builds an instance of the `fastcollate.errors` class of `kind`, carrying `message`.
pub fn collate_error(kind: ErrorKind, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("fastcollate.errors")
            .and_then(|module| module.getattr(kind.class_name()))
        {
            Ok(cls) => PyErr::from_type(
                cls.cast_into().expect("fastcollate.errors holds classes"),
                message,
            ),
            Err(err) => err,
        }
    })
}

/// The kind of `err` when it is the `fastcollate.errors` class of a kind that `wanted` accepts.
pub fn kind_of(
    py: Python<'_>,
    err: &PyErr,
    wanted: impl Fn(ErrorKind) -> bool,
) -> Option<ErrorKind> {
    let module = py.import("fastcollate.errors").ok()?;
    ErrorKind::ALL
        .iter()
        .copied()
        .filter(|&kind| wanted(kind))
        .find(|kind| {
            module
                .getattr(kind.class_name())
                .and_then(|cls| Ok(cls.cast_into::<pyo3::types::PyType>()?))
                .is_ok_and(|cls| err.is_instance(py, &cls))
        })
}

impl From<KernelError> for PyErr {
    fn from(err: KernelError) -> PyErr {
        let kind = match err {
            KernelError::Index { .. } => ErrorKind::Index,
            KernelError::Length { .. } | KernelError::Overflow(_) => ErrorKind::Shape,
        };
        collate_error(kind, err.to_string())
    }
}
