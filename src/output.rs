//! Everything sqlbak prints for its reader (tables, JSON, fire times, completion scripts)
//! goes through here, so a reader that stops early (`sqlbak list | head -1`) is handled in
//! one place: `println!` would panic on the closed pipe.
//!
//! Two kinds of command print. For those whose output is the whole point (`list`,
//! `schedule`, `completions`) a closed stdout ends the command, and `main` exits 0 without
//! a word, as grep or git do. For those that do work and report it (`snapshot`, `restore`,
//! `prune`, `verify`, `check`) the reader leaving changes nothing: the work goes on and the
//! exit status still says how it went.

use std::fmt::Display;
use std::io::{self, Write};

/// The reader closed stdout before everything was printed.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed before everything was printed")]
pub struct StdoutClosed;

/// Prints `line` and a newline for a command whose output is its purpose; fails with
/// [`StdoutClosed`] once the reader has gone, so the command stops there.
pub fn print_line(line: impl Display) -> anyhow::Result<()> {
    print_bytes(format!("{line}\n").as_bytes())
}

/// Prints `bytes` as they are, like [`print_line`].
pub fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    match write(bytes) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => other.map_err(cannot_write),
    }
}

/// Prints `line` and a newline as a report on work the command does anyway: a reader that
/// has gone is ignored, so the work and its exit status stay the same.
pub fn report_line(line: impl Display) -> anyhow::Result<()> {
    match write(format!("{line}\n").as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(cannot_write),
    }
}

/// Whether `err` only says that the reader closed stdout (which is not a failure).
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<StdoutClosed>())
}

fn write(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush())
}

/// Any other failure (a full disk behind `> file`) is an error: the output is lost.
fn cannot_write(e: io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("cannot write to stdout")
}
