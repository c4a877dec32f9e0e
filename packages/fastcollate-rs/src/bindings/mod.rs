//! PyO3 functions: extract the inputs, check them, copy inside `py.detach` (GIL released), return.

pub mod copy;
pub mod ndarray;
pub mod openmp;
pub mod shm;
pub mod tensors;
pub mod transpose;
