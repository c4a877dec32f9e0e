//! The one place where Rust errors become Python exceptions: the classes live in `fastcollate.errors`
//! (so `except ValueError` / `except IndexError` keep working) and are looked up only when an error happens.

use pyo3::prelude::*;

use crate::kernels::KernelError;

/// Builds an instance of `fastcollate.errors.<class_name>` carrying `message`.
pub fn collate_error(class_name: &str, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("fastcollate.errors")
            .and_then(|module| module.getattr(class_name))
        {
            Ok(cls) => PyErr::from_type(
                cls.cast_into().expect("fastcollate.errors holds classes"),
                message,
            ),
            Err(err) => err,
        }
    })
}

impl From<KernelError> for PyErr {
    fn from(err: KernelError) -> PyErr {
        let class = match err {
            KernelError::Index { .. } => "CollateIndexError",
            KernelError::Length { .. } | KernelError::Overflow(_) => "CollateShapeError",
        };
        collate_error(class, err.to_string())
    }
}
