//! The plan of a batch: the structure of its first sample, parsed from what `fastcollate._collate._plan` built
//! with the codes of [`Code`].

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{collate_error, ErrorKind};
use crate::protocol::Code;

/// The structure of the first sample, as built by `fastcollate._structure`.
pub(super) enum Spec<'py> {
    Leaf(Code),
    Seq(Vec<Spec<'py>>),
    /// Keys and children; `true` when every child is a leaf (see `walk_map_in_order`).
    Map(Vec<(Bound<'py, PyAny>, Spec<'py>)>, bool),
}

pub(super) fn parse<'py>(spec: &Bound<'py, PyAny>) -> PyResult<Spec<'py>> {
    if let Ok(value) = spec.extract::<u8>() {
        return match Code::from_u8(value) {
            Some(code) if code.is_leaf() => Ok(Spec::Leaf(code)),
            _ => Err(collate_error(
                ErrorKind::Type,
                format!("unknown leaf code {value}"),
            )),
        };
    }
    let node = spec.cast::<PyTuple>()?;
    let value: u8 = node.get_item(0)?.extract()?;
    match Code::from_u8(value) {
        Some(Code::Seq) => {
            let children = node.get_item(1)?.cast_into::<PyTuple>()?;
            Ok(Spec::Seq(
                children
                    .iter()
                    .map(|c| parse(&c))
                    .collect::<PyResult<_>>()?,
            ))
        }
        Some(Code::Map) => {
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
            ErrorKind::Type,
            format!("unknown node kind {value}"),
        )),
    }
}

pub(super) fn leaves(spec: &Spec<'_>, out: &mut Vec<Code>) {
    match spec {
        Spec::Leaf(code) => out.push(*code),
        Spec::Seq(children) => children.iter().for_each(|c| leaves(c, out)),
        Spec::Map(entries, _) => entries.iter().for_each(|(_, c)| leaves(c, out)),
    }
}
