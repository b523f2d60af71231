//! `sqlbak completions SHELL`: the completion script, generated from the clap definitions
//! like the man pages, so it always matches the flags of this binary.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;

/// Prints the script for the chosen shell to stdout.
pub fn run(args: &CompletionsArgs) -> Result<()> {
    // Rendered into memory first: clap_complete panics on a write error (a closed pipe),
    // and we would rather report it.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "sqlbak", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script to stdout")
}
