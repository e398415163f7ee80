use std::fmt;

/// An argument error. `Type` is a wrong kind of value (maps to Python's TypeError),
/// `Value` a value outside what is allowed (ValueError), `Memory` a size the machine cannot
/// hold (MemoryError). Messages name the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Value(String),
    Type(String),
    Memory(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Value(m) | Error::Type(m) | Error::Memory(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for a `ValueError`-kind error.
pub fn value_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Value(msg.into()))
}

/// `a * b * ...` with an error naming `what` on overflow.
pub fn checked_product(factors: &[usize], what: &str) -> Result<usize> {
    factors.iter().try_fold(1usize, |acc, &f| {
        acc.checked_mul(f)
            .ok_or_else(|| Error::Value(format!("{what}: size overflows ({factors:?})")))
    })
}
