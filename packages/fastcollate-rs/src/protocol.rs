//! The contract between the Python facade and this crate, in one place: the codes of a collation plan and the
//! exception classes errors become. Both are exported to Python (`_native.PLAN_CODES`, `_native.ERROR_CLASSES`),
//! which builds its plans from them and checks the classes at import; the tests below pin the values.

/// A node of the plan `fastcollate._collate._plan` builds from the first sample: the leaf kinds (how a column is
/// read) and the two containers.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Any object, kept as it is (tensors, arrays, strings...).
    Obj = 0,
    /// Python `int`, read into int64.
    Int = 1,
    /// Python `float`, read into float64.
    Float = 2,
    /// Python `bool`, read into one byte.
    Bool = 3,
    /// A list or tuple node: `(SEQ, children)`.
    Seq = 4,
    /// A dict node: `(MAP, keys, children)`.
    Map = 5,
}

impl Code {
    /// Every code, in value order (a code's value is its index here).
    pub const ALL: [Code; 6] = [
        Code::Obj,
        Code::Int,
        Code::Float,
        Code::Bool,
        Code::Seq,
        Code::Map,
    ];

    /// The name Python uses for the code.
    pub const fn name(self) -> &'static str {
        match self {
            Code::Obj => "OBJ",
            Code::Int => "INT",
            Code::Float => "FLOAT",
            Code::Bool => "BOOL",
            Code::Seq => "SEQ",
            Code::Map => "MAP",
        }
    }

    pub fn from_u8(value: u8) -> Option<Code> {
        Code::ALL.get(usize::from(value)).copied()
    }

    /// A leaf code (one column per leaf).
    pub const fn is_leaf(self) -> bool {
        matches!(self, Code::Obj | Code::Int | Code::Float | Code::Bool)
    }
}

/// What went wrong, as the `fastcollate.errors` class Python raises for it (each also subclasses the built-in
/// exception `default_collate` raises in that case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A plan or input of the wrong type (TypeError).
    Type,
    /// Lengths, sizes or addresses that do not fit (ValueError, RuntimeError).
    Shape,
    /// A row index out of range (IndexError).
    Index,
    /// A key of sample 0 missing in another sample (KeyError).
    Key,
    /// A list or tuple of another length than sample 0's (RuntimeError).
    Length,
    /// Another kind of container than sample 0's, or none (TypeError).
    Container,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Type,
        ErrorKind::Shape,
        ErrorKind::Index,
        ErrorKind::Key,
        ErrorKind::Length,
        ErrorKind::Container,
    ];

    /// The class in `fastcollate.errors`.
    pub const fn class_name(self) -> &'static str {
        match self {
            ErrorKind::Type => "CollateTypeError",
            ErrorKind::Shape => "CollateShapeError",
            ErrorKind::Index => "CollateIndexError",
            ErrorKind::Key => "CollateKeyError",
            ErrorKind::Length => "CollateLengthError",
            ErrorKind::Container => "CollateContainerError",
        }
    }

    /// A structure mismatch between samples (the walker names its place in a second walk).
    pub const fn is_structure(self) -> bool {
        matches!(
            self,
            ErrorKind::Key | ErrorKind::Length | ErrorKind::Container
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_codes_are_pinned() {
        // fastcollate/_collate.py reads these names from _native.PLAN_CODES; tests/test_protocol.py pins them too
        let pinned = [
            ("OBJ", 0),
            ("INT", 1),
            ("FLOAT", 2),
            ("BOOL", 3),
            ("SEQ", 4),
            ("MAP", 5),
        ];
        let actual: Vec<(&str, u8)> = Code::ALL.iter().map(|&c| (c.name(), c as u8)).collect();
        assert_eq!(actual, pinned);
        for &code in &Code::ALL {
            assert_eq!(Code::from_u8(code as u8), Some(code));
        }
        assert_eq!(Code::from_u8(6), None);
        assert!(!Code::Seq.is_leaf() && !Code::Map.is_leaf() && Code::Bool.is_leaf());
    }

    #[test]
    fn error_classes_are_distinct() {
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.class_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(
            ErrorKind::ALL.iter().filter(|k| k.is_structure()).count(),
            3
        );
    }
}
