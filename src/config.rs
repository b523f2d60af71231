//! The TOML config file and the one set of options shared by it and the command line.
//!
//! Top-level keys are defaults for every `[[databases]]` entry; an entry's own keys win,
//! and command-line flags win over both. Unknown keys are an error naming the key and the
//! file, because a typo must never silently disable part of a backup.

use crate::capture::Method;
use crate::retention::RetentionPolicy;
use crate::timespec;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A duration written the way people write them (`30s`, `2m`), in flags and in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = timespec::TimeSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        timespec::parse_duration(s).map(HumanDuration)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = timespec::TimeSpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

/// `16777216`, `16MiB`, `16MB`, `512KiB`, `1GiB` (case-insensitive).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A size in bytes written as people write them (`512MiB`, `2GiB`, `1048576`), in flags and
/// in TOML (where a plain integer works too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "String")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size(s)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is not a size: use one such as 512MiB, 2GiB or 0"))
    }
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Self, Self::Error> {
        match r {
            SizeRepr::Bytes(n) => Ok(ByteSize(n)),
            SizeRepr::Text(s) => s.parse(),
        }
    }
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        b.0.to_string()
    }
}

/// Options a config file and the command line can both set. Every field is optional so
/// that layers can be overlaid; [`Options::resolve`] fills in defaults.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct Options {
    /// Where snapshots go: a directory, file:///path or s3://bucket/prefix (S3 and
    /// S3-compatible stores; see the README for ?endpoint=, region= and more).
    #[arg(long, short = 'd', value_name = "DEST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,

    /// How the image is taken [default: stream].
    #[arg(long, value_enum, help_heading = "Capture")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,

    /// How long to wait for a locked database before failing [default: 30s].
    #[arg(long, value_name = "DURATION", help_heading = "Capture")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_timeout: Option<HumanDuration>,

    /// Directory for pages the compressor has not reached when the read transaction ends
    /// (room for nearly one copy of the database; a whole copy with --method backup or
    /// vacuum) [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR", help_heading = "Capture")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmp_dir: Option<PathBuf>,

    /// The most temporary space a streamed snapshot may hold for pages the compressor has not
    /// reached; beyond it the read transaction waits for the compressor, holding back the
    /// database's checkpoints for longer. 0 never uses temporary space [default: no limit].
    #[arg(long, value_name = "SIZE", help_heading = "Capture")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmp_limit: Option<ByteSize>,

    /// gzip level, 0 (store) to 9 (smallest) [default: 6].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=9), help_heading = "Compression")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,

    /// Compression threads [default: number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = "Compression")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,

    /// Encrypt snapshots to this age recipient: an age public key (age1…) or an SSH
    /// public key (ssh-ed25519 …, ssh-rsa …). Repeat for several recipients.
    #[arg(
        long = "age-recipient",
        value_name = "RECIPIENT",
        help_heading = "Encryption"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_recipients: Option<Vec<String>>,

    /// Encrypt snapshots to every recipient in this file (one per line, # comments).
    #[arg(
        long = "age-recipients-file",
        value_name = "FILE",
        help_heading = "Encryption"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_recipients_file: Option<PathBuf>,

    /// Identity file that decrypts snapshots for restore and verify (config only; the
    /// flag is `--age-identity` on those commands).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_identity_file: Option<PathBuf>,

    /// How long to wait for another run of the same database to finish before giving up
    /// with exit code 4 [default: 0s, do not wait].
    #[arg(long, value_name = "DURATION", help_heading = "Running unattended")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<HumanDuration>,

    /// Shell command (sh -c) run after a successful snapshot, with SQLBAK_STATUS=success,
    /// SQLBAK_NAME, SQLBAK_DB, SQLBAK_DEST, SQLBAK_KEY, SQLBAK_SIZE (bytes stored) and
    /// SQLBAK_DURATION (seconds). Its failure is only a warning; it is stopped after 60s.
    #[arg(long, value_name = "COMMAND", help_heading = "Running unattended")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,

    /// Shell command (sh -c) run after a failed snapshot, with SQLBAK_STATUS=failure,
    /// SQLBAK_NAME, SQLBAK_DB, SQLBAK_DEST, SQLBAK_DURATION and SQLBAK_ERROR.
    #[arg(long, value_name = "COMMAND", help_heading = "Running unattended")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,

    /// healthchecks.io-style URL pinged at start (URL/start), success (URL) and
    /// failure (URL/fail, the error as the body). A failed ping is only a warning.
    #[arg(long, value_name = "URL", help_heading = "Running unattended")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,

    /// Write Prometheus textfile-collector metrics for each database to this file
    /// (updated atomically; other databases' series are kept).
    #[arg(long, value_name = "PATH", help_heading = "Running unattended")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_file: Option<PathBuf>,

    /// Cron expression for `sqlbak run` and `sqlbak check` (config only).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,

    /// Fixed interval for `sqlbak run` and `sqlbak check`, e.g. 15m (config only).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,

    /// IANA time zone in which `schedule` is read [default: UTC] (config only).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,

    /// Which snapshots `prune` (and `snapshot`, after a success) keeps: a `[retention]`
    /// table (config only; the flags are `--keep-*`). Rules are layered field by field.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
}

/// The keys [`Options`] accepts in TOML; a unit test keeps this in step with the struct.
pub const OPTION_KEYS: &[&str] = &[
    "dest",
    "method",
    "busy_timeout",
    "tmp_dir",
    "tmp_limit",
    "level",
    "jobs",
    "age_recipients",
    "age_recipients_file",
    "age_identity_file",
    "retention",
    "wait",
    "on_success",
    "on_failure",
    "ping_url",
    "metrics_file",
    "schedule",
    "interval",
    "timezone",
];

/// Options with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Destination URL or path.
    pub dest: String,
    /// Capture method.
    pub method: Method,
    /// Busy timeout for the source.
    pub busy_timeout: Duration,
    /// Temporary directory.
    pub tmp_dir: PathBuf,
    /// Most temporary space a streamed capture may use; `None`: no limit.
    pub tmp_limit: Option<u64>,
    /// gzip level.
    pub level: u32,
    /// Compression threads.
    pub jobs: u32,
    /// age recipients given inline.
    pub age_recipients: Vec<String>,
    /// age recipients file.
    pub age_recipients_file: Option<PathBuf>,
    /// Retention policy (possibly without rules: then nothing is pruned).
    pub retention: RetentionPolicy,
    /// How long to wait for the per-database lock.
    pub wait: Duration,
    /// Command after success.
    pub on_success: Option<String>,
    /// Command after failure.
    pub on_failure: Option<String>,
    /// healthchecks-style ping URL.
    pub ping_url: Option<String>,
    /// Prometheus textfile path.
    pub metrics_file: Option<PathBuf>,
}

impl Options {
    /// Field-wise: a value in `self` wins over one in `lower`.
    pub fn over(&self, lower: &Options) -> Options {
        Options {
            dest: self.dest.clone().or_else(|| lower.dest.clone()),
            method: self.method.or(lower.method),
            busy_timeout: self.busy_timeout.or(lower.busy_timeout),
            tmp_dir: self.tmp_dir.clone().or_else(|| lower.tmp_dir.clone()),
            tmp_limit: self.tmp_limit.or(lower.tmp_limit),
            level: self.level.or(lower.level),
            jobs: self.jobs.or(lower.jobs),
            age_recipients: self
                .age_recipients
                .clone()
                .or_else(|| lower.age_recipients.clone()),
            age_recipients_file: self
                .age_recipients_file
                .clone()
                .or_else(|| lower.age_recipients_file.clone()),
            age_identity_file: self
                .age_identity_file
                .clone()
                .or_else(|| lower.age_identity_file.clone()),
            wait: self.wait.or(lower.wait),
            on_success: self.on_success.clone().or_else(|| lower.on_success.clone()),
            on_failure: self.on_failure.clone().or_else(|| lower.on_failure.clone()),
            ping_url: self.ping_url.clone().or_else(|| lower.ping_url.clone()),
            metrics_file: self
                .metrics_file
                .clone()
                .or_else(|| lower.metrics_file.clone()),
            // schedule and interval are one choice: a layer that sets either replaces both.
            schedule: if self.schedule.is_some() || self.interval.is_some() {
                self.schedule.clone()
            } else {
                lower.schedule.clone()
            },
            interval: if self.schedule.is_some() || self.interval.is_some() {
                self.interval
            } else {
                lower.interval
            },
            timezone: self.timezone.clone().or_else(|| lower.timezone.clone()),
            retention: match (&self.retention, &lower.retention) {
                (Some(a), Some(b)) => Some(a.clone().or(b.clone())),
                (a, b) => a.clone().or_else(|| b.clone()),
            },
        }
    }

    /// Applies defaults; only the destination has none. A destination that does not parse
    /// is a usage error here, before any work is done.
    pub fn resolve(&self) -> Result<Resolved> {
        let Some(dest) = self.dest.clone() else {
            bail!(crate::exit::usage(
                "no destination: pass --dest DIR (or set dest in the config file)"
            ));
        };
        crate::storage::check_destination(&dest).map_err(|e| crate::exit::usage(e.to_string()))?;
        if let Some(url) = &self.ping_url {
            crate::ping::check_url(url).map_err(|e| crate::exit::usage(e.to_string()))?;
        }
        Ok(Resolved {
            dest,
            method: self.method.unwrap_or_default(),
            busy_timeout: self.busy_timeout.map_or(Duration::from_secs(30), |d| d.0),
            tmp_dir: self.tmp_dir.clone().unwrap_or_else(std::env::temp_dir),
            tmp_limit: self.tmp_limit.map(|b| b.0),
            level: self.level.unwrap_or(6),
            jobs: self.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
            }),
            age_recipients: self.age_recipients.clone().unwrap_or_default(),
            age_recipients_file: self.age_recipients_file.clone(),
            retention: self.retention.clone().unwrap_or_default(),
            wait: self.wait.map_or(Duration::ZERO, |d| d.0),
            on_success: self.on_success.clone(),
            on_failure: self.on_failure.clone(),
            ping_url: self.ping_url.clone(),
            metrics_file: self.metrics_file.clone(),
        })
    }
}

/// One `[[databases]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseEntry {
    /// The database file.
    pub path: PathBuf,
    /// Snapshot name; the file stem when absent.
    pub name: Option<String>,
    /// This entry's own options.
    #[serde(flatten)]
    pub options: Options,
}

impl DatabaseEntry {
    /// The snapshot name: `name`, else the file stem.
    pub fn snapshot_name(&self) -> Option<String> {
        self.name.clone().or_else(|| {
            self.path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
        })
    }
}

/// A parsed config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    /// Where it was read from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
    /// Defaults for every entry.
    #[serde(flatten)]
    pub defaults: Options,
    /// The databases to back up.
    #[serde(default)]
    pub databases: Vec<DatabaseEntry>,
}

impl ConfigFile {
    /// The entry whose snapshot name (given or derived from its path) is `name`.
    pub fn entry_named(&self, name: &str) -> Option<&DatabaseEntry> {
        self.databases
            .iter()
            .find(|db| db.snapshot_name().as_deref() == Some(name))
    }

    /// Every database entry (only the one named `only`, when given) as its snapshot name,
    /// its options layered over the top level, and its destination, which must be set.
    pub fn entries(&self, only: Option<&str>) -> Result<Vec<(String, Options, String)>> {
        let mut out = Vec::new();
        for db in &self.databases {
            let Some(name) = db.snapshot_name() else {
                continue;
            };
            if only.is_some_and(|n| n != name) {
                continue;
            }
            let opts = db.options.over(&self.defaults);
            let Some(dest) = opts.dest.clone() else {
                bail!(crate::exit::usage(format!(
                    "config file {}: database {name} has no dest",
                    self.path.display()
                )));
            };
            out.push((name, opts, dest));
        }
        Ok(out)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config file {} (given by --config or SQLBAK_CONFIG)",
                path.display()
            )
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile> {
        let bad =
            |msg: String| crate::exit::usage(format!("config file {}: {msg}", path.display()));
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        check_keys(
            &table,
            &[OPTION_KEYS, &["databases"]].concat(),
            "at the top level",
        )
        .map_err(bad)?;
        if let Some(dbs) = table.get("databases") {
            let Some(dbs) = dbs.as_array() else {
                return Err(
                    bad("databases must be an array of tables: write [[databases]]".into()).into(),
                );
            };
            for (i, db) in dbs.iter().enumerate() {
                let Some(db) = db.as_table() else {
                    return Err(bad(
                        "databases must be an array of tables: write [[databases]]".into()
                    )
                    .into());
                };
                let place = match db.get("path").and_then(|p| p.as_str()) {
                    Some(p) => format!("in [[databases]] entry {} (path = {p:?})", i + 1),
                    None => format!("in [[databases]] entry {}", i + 1),
                };
                check_keys(db, &[OPTION_KEYS, &["path", "name"]].concat(), &place).map_err(bad)?;
            }
        }
        let mut cfg: ConfigFile = table
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        cfg.path = path.to_path_buf();
        Ok(cfg)
    }
}

fn check_keys(table: &toml::Table, known: &[&str], place: &str) -> Result<(), String> {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "unknown key `{key}` {place}; known keys are: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        const MIB: u64 = 1 << 20;
        assert_eq!(parse_size("16777216"), Some(16 * MIB));
        assert_eq!(parse_size("5MiB"), Some(5 * MIB));
        assert_eq!(parse_size("5mb"), Some(5_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!("0".parse::<ByteSize>(), Ok(ByteSize(0)));
        assert!("lots".parse::<ByteSize>().unwrap_err().contains("512MiB"));
        let toml_int: Options = toml::from_str("tmp_limit = 0").unwrap();
        assert_eq!(toml_int.tmp_limit, Some(ByteSize(0)));
        let toml_text: Options = toml::from_str("tmp_limit = \"2GiB\"").unwrap();
        assert_eq!(toml_text.tmp_limit, Some(ByteSize(2 << 30)));
        assert!(toml::from_str::<Options>("tmp_limit = \"lots\"").is_err());
    }

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(text, Path::new("/etc/sqlbak.toml"))
    }

    #[test]
    fn option_keys_match_the_struct() {
        let full = Options {
            dest: Some("d".into()),
            method: Some(Method::Vacuum),
            busy_timeout: Some(HumanDuration(Duration::from_secs(1))),
            tmp_dir: Some("/t".into()),
            tmp_limit: Some(ByteSize(1)),
            level: Some(1),
            jobs: Some(1),
            age_recipients: Some(vec!["r".into()]),
            age_recipients_file: Some("/r".into()),
            age_identity_file: Some("/i".into()),
            retention: Some(RetentionPolicy::default()),
            wait: Some(HumanDuration(Duration::from_secs(1))),
            on_success: Some("s".into()),
            on_failure: Some("f".into()),
            ping_url: Some("u".into()),
            metrics_file: Some("/m".into()),
            schedule: Some("@daily".into()),
            interval: Some(HumanDuration(Duration::from_secs(1))),
            timezone: Some("UTC".into()),
        };
        let v = serde_json::to_value(&full).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut keys = OPTION_KEYS.to_vec();
        fields.sort();
        keys.sort();
        assert_eq!(fields, keys);
    }

    #[test]
    fn defaults_and_overrides() {
        let cfg = parse(
            r#"
dest = "/backups"
level = 9
busy_timeout = "5s"
[[databases]]
path = "/var/lib/app/app.db"
name = "app"
[[databases]]
path = "/var/lib/other.db"
dest = "/mnt/other"
method = "vacuum"
tmp_limit = "512MiB"
"#,
        )
        .unwrap();
        assert_eq!(cfg.databases.len(), 2);
        let a = cfg.databases[0]
            .options
            .over(&cfg.defaults)
            .resolve()
            .unwrap();
        assert_eq!(a.dest, "/backups");
        assert_eq!(a.level, 9);
        assert_eq!(a.busy_timeout, Duration::from_secs(5));
        assert_eq!(a.method, Method::Stream);
        assert_eq!(a.tmp_limit, None);
        let b = cfg.databases[1]
            .options
            .over(&cfg.defaults)
            .resolve()
            .unwrap();
        assert_eq!(b.dest, "/mnt/other");
        assert_eq!(b.method, Method::Vacuum);
        assert_eq!(b.tmp_limit, Some(512 << 20));
        let cli = Options {
            level: Some(1),
            ..Options::default()
        };
        assert_eq!(
            cli.over(&cfg.databases[1].options.over(&cfg.defaults))
                .resolve()
                .unwrap()
                .level,
            1
        );
    }

    #[test]
    fn retention_tables_layer_field_by_field() {
        let cfg = parse(
            r#"
[retention]
keep_last = 3
keep_daily = 7
[[databases]]
path = "/a.db"
[databases.retention]
keep_daily = 30
keep_within = "2weeks"
"#,
        )
        .unwrap();
        let r = cfg.databases[0]
            .options
            .over(&cfg.defaults)
            .retention
            .unwrap();
        assert_eq!(r.keep_last, Some(3));
        assert_eq!(r.keep_daily, Some(30));
        assert_eq!(
            r.keep_within.map(|d| *d),
            Some(Duration::from_secs(14 * 86400))
        );
        let err = parse("[retention]\nkeep_dayly = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keep_dayly") && err.contains("/etc/sqlbak.toml"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        let err = parse("dset = \"/x\"\n").unwrap_err().to_string();
        assert!(
            err.contains("`dset`") && err.contains("/etc/sqlbak.toml"),
            "{err}"
        );
        let err = parse("[[databases]]\npath = \"/a.db\"\nlevle = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`levle`") && err.contains("\"/a.db\""),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse("busy_timeout = \"soon\"\n").is_err());
        assert!(parse("method = \"copy\"\n").is_err());
        assert!(
            parse("[[databases]]\nname = \"x\"\n").is_err(),
            "path is required"
        );
        assert!(parse("databases = 3\n").is_err());
        assert!(parse("this is not toml").is_err());
    }

    #[test]
    fn missing_dest_is_a_usage_error() {
        let err = Options::default().resolve().unwrap_err();
        assert!(err.to_string().contains("--dest"));
    }
}
