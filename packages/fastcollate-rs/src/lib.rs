//! `fastcollate._native`: Rust copy kernels for PyTorch batch collation.
//!
//! Python allocates the output tensors and walks the batch structure; this crate checks every length and copies
//! with the GIL released. `kernels` is plain Rust (tested by `cargo test`); `bindings` is the PyO3 layer.

pub mod kernels;
pub mod protocol;

#[cfg(feature = "python")]
mod bindings;
#[cfg(feature = "python")]
mod errors;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let codes = pyo3::types::PyDict::new(m.py());
    for code in protocol::Code::ALL {
        codes.set_item(code.name(), code as u8)?;
    }
    m.add("PLAN_CODES", codes)?;
    let classes: Vec<&str> = protocol::ErrorKind::ALL
        .iter()
        .map(|k| k.class_name())
        .collect();
    m.add("ERROR_CLASSES", pyo3::types::PyTuple::new(m.py(), classes)?)?;
    m.add_function(wrap_pyfunction!(bindings::copy::stack_into, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::copy::pad_into, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::copy::gather_into, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::transpose::columns, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::tensors::tensor_addresses, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::ndarray::array_addresses, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::copy::max_threads, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::copy::prefault, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::openmp::bind_openmp, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::openmp::set_openmp_threads, m)?)?;
    m.add_class::<bindings::shm::Segment>()?;
    Ok(())
}
