//! Exit codes, documented in the README and man page:
//! 0 success, 1 failure, 2 usage or configuration error, 3 nothing to do (no snapshot
//! matched, no database configured), 4 another run holds the database's lock.

use std::fmt;

/// Everything worked.
pub const SUCCESS: i32 = 0;
/// Something failed (I/O, corruption, a database that stayed locked, ...).
pub const FAILURE: i32 = 1;
/// The command line or config file is wrong; nothing was attempted.
pub const USAGE: i32 = 2;
/// There was nothing to act on, e.g. no snapshot at or before `--at`.
pub const NOTHING: i32 = 3;

/// Another run of the same database holds its lock (and `--wait` ran out).
pub const LOCKED: i32 = 4;

/// Another run holds the lock.
pub fn locked(message: impl Into<String>) -> Exit {
    Exit {
        code: LOCKED,
        message: message.into(),
    }
}

/// An error that carries its exit code; anything else exits with [`FAILURE`].
#[derive(Debug)]
pub struct Exit {
    /// Process exit code.
    pub code: i32,
    message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A usage or configuration error.
pub fn usage(message: impl Into<String>) -> Exit {
    Exit {
        code: USAGE,
        message: message.into(),
    }
}

/// Nothing to do.
pub fn nothing(message: impl Into<String>) -> Exit {
    Exit {
        code: NOTHING,
        message: message.into(),
    }
}

/// The exit code for an error, looking through any context added on the way up.
pub fn code_of(err: &anyhow::Error) -> i32 {
    if let Some(e) = err.downcast_ref::<Exit>() {
        return e.code;
    }
    err.chain()
        .find_map(|e| e.downcast_ref::<Exit>())
        .map_or(FAILURE, |e| e.code)
}
