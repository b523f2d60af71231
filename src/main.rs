//! The binary: parse, set up logging, dispatch, turn errors into exit codes.
#![forbid(unsafe_code)]

use clap::Parser;
use sqlbak::cli::{Cli, Command};
use sqlbak::commands::{self, Env};
use sqlbak::config::ConfigFile;
use sqlbak::{exit, output, ui::Ui};

fn main() {
    let cli = Cli::parse();
    // The daemon logs each run by default; one-shot commands are quiet when all is well.
    let daemon = matches!(cli.command, Command::Run(_));
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) if daemon => tracing::Level::INFO,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, _) => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    let code = match run(&cli) {
        Ok(()) => exit::SUCCESS,
        // The reader has all it wanted (`sqlbak list | head -1`).
        Err(e) if output::is_stdout_closed(&e) => exit::SUCCESS,
        Err(e) => {
            eprintln!("sqlbak: error: {e:#}");
            exit::code_of(&e)
        }
    };
    std::process::exit(code);
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Command::Completions(a) = &cli.command {
        return commands::completions::run(a);
    }
    let config = match &cli.global.config {
        Some(path) => Some(
            ConfigFile::load(path)
                .map_err(|e| anyhow::Error::new(exit::usage(format!("{e:#}"))))?,
        ),
        None => None,
    };
    let json = match &cli.command {
        Command::Snapshot(a) => a.json,
        Command::List(a) => a.json,
        Command::Restore(a) => a.json,
        Command::Verify(a) => a.json,
        Command::Prune(a) => a.json,
        Command::Check(a) => a.json,
        Command::Run(_) | Command::Schedule(_) => true,
        Command::Completions(_) => false,
    };
    let env = Env {
        config,
        ui: Ui::new(cli.global.quiet, json),
    };
    match &cli.command {
        Command::Snapshot(a) => commands::snapshot::run(&env, a),
        Command::List(a) => commands::list::run(&env, a),
        Command::Restore(a) => commands::restore::run(&env, a),
        Command::Verify(a) => commands::verify::run(&env, a),
        Command::Prune(a) => commands::prune::run(&env, a),
        Command::Check(a) => commands::check::run(&env, a),
        Command::Schedule(a) => commands::schedule::run(a),
        Command::Run(a) => commands::run::run(env, a),
        Command::Completions(a) => commands::completions::run(a),
    }
}
