//! The command line: the one definition of every flag. Help text, the man pages and
//! completions are all generated from these structs.

use crate::config::Options;
use crate::retention::RetentionPolicy;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  failure (I/O, corruption, locked database, ...)
  2  usage or configuration error
  3  nothing to do (no snapshot matched, no database configured)
  4  another run of the same database holds its lock";

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
// Parsed once per process, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a consistent snapshot of one database, or of every configured database.
    #[command(after_help = "Examples:
  sqlbak snapshot --db /var/lib/app/app.db --dest /backups
  sqlbak snapshot --db /var/lib/app/app.db --dest s3://my-bucket/prod
  sqlbak snapshot --config /etc/sqlbak.toml
  sqlbak snapshot --config /etc/sqlbak.toml --name app    # one configured database
  sqlbak snapshot --db app.db --dest /backups --age-recipient age1qz...   # encrypted

Crontab (every hour, quiet unless something fails):
  0 * * * *  sqlbak snapshot --config /etc/sqlbak.toml")]
    Snapshot(SnapshotArgs),
    /// List snapshots, oldest first.
    #[command(after_help = "Examples:
  sqlbak list --dest /backups
  sqlbak list --dest /backups --name app --json
  sqlbak list --dest \"s3://bkt/prod?endpoint=http://127.0.0.1:9000&region=us-east-1\"")]
    List(ListArgs),
    /// Restore a snapshot by time into a database file.
    #[command(after_help = "Examples:
  sqlbak restore --dest /backups --name app -o /tmp/app.db                 # newest
  sqlbak restore --dest /backups --name app --at 2024-01-01 -o /tmp/app.db
  sqlbak restore --dest /backups --name app --at \"2h ago\" -o app.db --force
  sqlbak restore --dest /backups --name app --age-identity key.txt -o app.db

--at accepts RFC 3339 (2024-01-01T10:00:00Z, +02:00 offsets), a date (midnight UTC),
\"YYYY-MM-DD HH:MM[:SS]\" (UTC) and relative times (\"2h ago\", \"3days ago\").")]
    Restore(RestoreArgs),
    /// Delete old snapshots by a retention policy (restic's --keep-* rules).
    #[command(after_help = "Examples:
  sqlbak prune --dest /backups --name app --keep-last 3 --keep-daily 7 --keep-weekly 4 --dry-run
  sqlbak prune --config /etc/sqlbak.toml         # each database with its own [retention]

Rules are ORed (a snapshot is kept if any rule keeps it) and mean what they mean in
restic's forget: --keep-daily 7 keeps the newest snapshot of each of the 7 most recent
days (UTC) that have snapshots; --keep-within is measured from the newest snapshot.
The newest snapshot is always kept; a policy with no rule is an error.")]
    Prune(PruneArgs),
    /// Run as a scheduler: snapshot (and prune) each configured database on its schedule.
    #[command(after_help = "Examples:
  sqlbak run --config /etc/sqlbak.toml

Each [[databases]] entry (or the top level) sets `schedule` (a crontab expression, read in
`timezone`, default UTC) or `interval` (e.g. \"15m\", anchored at the Unix epoch). SIGTERM or
SIGINT stops taking new work, lets running snapshots finish and exits 0 (a second signal
abandons them; nothing partial is ever listed). SIGHUP reloads the config.")]
    Run(RunArgs),
    /// Print the next fire times of a cron expression.
    #[command(after_help = "Examples:
  sqlbak schedule \"0 3 * * *\"
  sqlbak schedule \"0 0 13 * fri\" --after 2024-09-01 --count 4
  sqlbak schedule \"30 2 * * *\" --timezone America/New_York

Crontab semantics: 5 fields (minute hour day-of-month month day-of-week) or 6 with a
leading seconds field, names (mon, jan), ranges, steps, lists, @hourly/@daily/@weekly/
@monthly/@yearly/@annually/@midnight; when both day fields are restricted, a day matches
if either does.")]
    Schedule(ScheduleArgs),
    /// Exit non-zero when a database's newest snapshot is too old, missing, or missed a slot.
    #[command(after_help = "Examples:
  sqlbak check --dest /backups --name app --max-age 26h
  sqlbak check --config /etc/sqlbak.toml               # each database against its schedule
  sqlbak check --config /etc/sqlbak.toml --max-age 26h --json")]
    Check(CheckArgs),
    /// Check snapshots: read, decompress, compare checksums, run PRAGMA integrity_check (full).
    #[command(after_help = "Examples:
  sqlbak verify --dest /backups               # the newest snapshot of each database
  sqlbak verify --dest /backups --name app --all --json")]
    Verify(VerifyArgs),
    /// Print a shell completion script to stdout.
    #[command(after_help = "Examples:
  sqlbak completions bash > /etc/bash_completion.d/sqlbak
  sqlbak completions zsh > ~/.zfunc/_sqlbak     # with fpath+=(~/.zfunc) in ~/.zshrc
  sqlbak completions fish > ~/.config/fish/completions/sqlbak.fish")]
    Completions(CompletionsArgs),
}

/// `sqlbak completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `sqlbak snapshot`.
#[derive(Debug, Default, Args)]
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
    /// Prune after a successful snapshot with these rules (layered over the config's).
    #[command(
        flatten,
        next_help_heading = "Retention (prune after a successful snapshot)"
    )]
    pub keep: RetentionPolicy,
}

/// `sqlbak run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Only this configured database.
    #[arg(short, long)]
    pub name: Option<String>,
}

/// `sqlbak schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Cron expression, macro (@daily) or `@every DURATION`.
    pub expr: String,
    /// Start after this time [default: now]; same forms as restore --at.
    #[arg(long, value_name = "TIME")]
    pub after: Option<String>,
    /// How many fire times to print.
    #[arg(long, short = 'n', default_value_t = 5)]
    pub count: usize,
    /// IANA time zone the expression is read in [default: UTC].
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
}

/// `sqlbak check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Where snapshots are [default: each configured database's destination].
    #[arg(short, long, value_name = "DEST")]
    pub dest: Option<String>,
    /// Only this database.
    #[arg(short, long)]
    pub name: Option<String>,
    /// Fail when the newest snapshot is older than this (e.g. 26h).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<crate::config::HumanDuration>,
    /// How late a scheduled snapshot may be before its slot counts as missed.
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub grace: crate::config::HumanDuration,
    /// Print a JSON array of results.
    #[arg(long)]
    pub json: bool,
}

/// `sqlbak prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Where snapshots are: a directory path or file:///path [default: from the config].
    #[arg(short, long, value_name = "DEST")]
    pub dest: Option<String>,
    /// Only this database.
    #[arg(short, long)]
    pub name: Option<String>,
    /// Show what would be kept and removed; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON array with every snapshot's verdict.
    #[arg(long)]
    pub json: bool,
    /// Retention rules (layered over the config's [retention]).
    #[command(flatten, next_help_heading = "Retention")]
    pub keep: RetentionPolicy,
}

/// `sqlbak list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where snapshots are: a directory, file:///path or s3://bucket/prefix [default: from the
    /// config].
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
    /// Where snapshots are: a directory, file:///path or s3://bucket/prefix [default: from the
    /// config].
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
    /// age identity file that decrypts encrypted snapshots (age-keygen output or an
    /// unencrypted SSH private key) [default: age_identity_file from the config].
    #[arg(long, value_name = "FILE", env = "SQLBAK_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
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
    /// Where snapshots are: a directory, file:///path or s3://bucket/prefix [default: from the
    /// config].
    #[arg(short, long, value_name = "DEST")]
    pub dest: Option<String>,
    /// Only this database.
    #[arg(short, long)]
    pub name: Option<String>,
    /// Check every snapshot, not just the newest of each database.
    #[arg(long)]
    pub all: bool,
    /// age identity file that decrypts encrypted snapshots (age-keygen output or an
    /// unencrypted SSH private key) [default: age_identity_file from the config].
    #[arg(long, value_name = "FILE", env = "SQLBAK_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
    /// Directory for the temporary copy of a snapshot being verified [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// Print a JSON array of results.
    #[arg(long)]
    pub json: bool,
}
