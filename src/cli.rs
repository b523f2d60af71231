//! The command line: the one definition of every flag. Help text, the man pages and
//! completions are all generated from these structs.

use crate::config::Options;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  failure (I/O, corruption, locked database, ...)
  2  usage or configuration error
  3  nothing to do (no snapshot matched, no database configured)";

/// Consistent, compressed snapshots of live SQLite databases.
#[derive(Debug, Parser)]
#[command(
    name = "sqlbak",
    version,
    about = "Consistent, compressed snapshots of live SQLite databases",
    long_about = "Consistent, compressed snapshots of live SQLite databases.\n\n\
Snapshots are plain gzip files (`gzip -dc snap.sqlite3.gz > app.db` restores one without \
sqlbak), stored as <dest>/<name>/<name>-<YYYYMMDDTHHMMSSZ>.sqlite3.gz. sqlbak opens the \
database read-only and never checkpoints it, so it runs safely beside a streaming \
replicator such as Litestream.",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log more: -v for each step, -vv for debugging.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print errors only (no warnings, no progress bars).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Config file (TOML) with destinations and databases.
    #[arg(short, long, env = "SQLBAK_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a consistent snapshot of one database, or of every configured database.
    #[command(after_help = "Examples:
  sqlbak snapshot --db /var/lib/app/app.db --dest /backups
  sqlbak snapshot --config /etc/sqlbak.toml
  sqlbak snapshot --config /etc/sqlbak.toml --name app    # one configured database

Crontab (every hour, quiet unless something fails):
  0 * * * *  sqlbak snapshot --config /etc/sqlbak.toml")]
    Snapshot(SnapshotArgs),
    /// List snapshots, oldest first.
    #[command(after_help = "Examples:
  sqlbak list --dest /backups
  sqlbak list --dest /backups --name app --json")]
    List(ListArgs),
    /// Restore a snapshot by time into a database file.
    #[command(after_help = "Examples:
  sqlbak restore --dest /backups --name app -o /tmp/app.db                 # newest
  sqlbak restore --dest /backups --name app --at 2024-01-01 -o /tmp/app.db
  sqlbak restore --dest /backups --name app --at \"2h ago\" -o app.db --force

--at accepts RFC 3339 (2024-01-01T10:00:00Z, +02:00 offsets), a date (midnight UTC),
\"YYYY-MM-DD HH:MM[:SS]\" (UTC) and relative times (\"2h ago\", \"3days ago\").")]
    Restore(RestoreArgs),
    /// Check snapshots: read, decompress, compare checksums, run PRAGMA integrity_check (full).
    #[command(after_help = "Examples:
  sqlbak verify --dest /backups               # the newest snapshot of each database
  sqlbak verify --dest /backups --name app --all --json")]
    Verify(VerifyArgs),
}

/// `sqlbak snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The database file to snapshot (without it, every database in the config).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Snapshot name [default: the file stem]; with a config and no --db, only this database.
    #[arg(short, long)]
    pub name: Option<String>,
    /// Print a JSON array describing each snapshot taken.
    #[arg(long)]
    pub json: bool,
    /// Destination, capture and compression options (override the config file).
    #[command(flatten)]
    pub options: Options,
}

/// `sqlbak list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where snapshots are: a directory path or file:///path [default: from the config].
    #[arg(short, long, value_name = "DEST")]
    pub dest: Option<String>,
    /// Only this database.
    #[arg(short, long)]
    pub name: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sqlbak restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where snapshots are: a directory path or file:///path [default: from the config].
    #[arg(short, long, value_name = "DEST")]
    pub dest: Option<String>,
    /// The database to restore (may be omitted when the destination holds only one).
    #[arg(short, long)]
    pub name: Option<String>,
    /// Restore the newest snapshot taken at or before this time [default: the newest].
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Output database file [default: the database's path in the config].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace an existing output file (and remove its stale -wal/-shm files).
    #[arg(short, long)]
    pub force: bool,
    /// How SQLite checks the restored database before it is moved into place: quick
    /// (PRAGMA quick_check), full (PRAGMA integrity_check, which also cross-checks indexes
    /// and can take several times longer), or none. The gzip CRCs and the recorded sha256
    /// are always checked.
    #[arg(long, value_enum, default_value_t = crate::image::Check::Quick, value_name = "HOW")]
    pub check: crate::image::Check,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sqlbak verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Where snapshots are: a directory path or file:///path [default: from the config].
    #[arg(short, long, value_name = "DEST")]
    pub dest: Option<String>,
    /// Only this database.
    #[arg(short, long)]
    pub name: Option<String>,
    /// Check every snapshot, not just the newest of each database.
    #[arg(long)]
    pub all: bool,
    /// Directory for the temporary image [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// Print a JSON array of results.
    #[arg(long)]
    pub json: bool,
}
