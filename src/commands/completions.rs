//! `sqlbak completions SHELL`: the completion script, generated from the clap definitions
//! like the man pages, so it always matches the flags of this binary.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::Result;
use clap::CommandFactory;

/// Prints the script for the chosen shell to stdout.
pub fn run(args: &CompletionsArgs) -> Result<()> {
    // Rendered into memory first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "sqlbak", &mut script);
    crate::output::print_bytes(&script)
}
