//! One module per subcommand: orchestration only, the work lives in the modules they call.

pub mod check;
pub mod completions;
pub mod list;
pub mod prune;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod snapshot;
pub mod unattended;
pub mod verify;

use crate::catalog::{self, Snapshot};
use crate::config::ConfigFile;
use crate::encryption::Identities;
use crate::exit;
use crate::storage::{self, Storage, StorageError};
use crate::ui::Ui;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// What every command gets besides its own arguments.
pub struct Env {
    /// The config file, when one was given.
    pub config: Option<ConfigFile>,
    /// Progress-bar policy.
    pub ui: Ui,
}

impl Env {
    /// The destinations a reading command looks at: `--dest`, else every distinct
    /// destination in the config, all of which must parse before any is read.
    pub fn read_dests(&self, dest: Option<&str>) -> Result<Vec<String>> {
        if let Some(d) = dest {
            return Ok(vec![d.to_string()]);
        }
        let mut dests: Vec<String> = Vec::new();
        if let Some(cfg) = &self.config {
            let candidates = cfg
                .databases
                .iter()
                .filter_map(|db| {
                    db.options
                        .dest
                        .clone()
                        .or_else(|| cfg.defaults.dest.clone())
                })
                .chain(cfg.defaults.dest.clone());
            for d in candidates {
                if !dests.contains(&d) {
                    storage::check_destination(&d).map_err(|e| {
                        exit::usage(format!("config file {}: {e}", cfg.path.display()))
                    })?;
                    dests.push(d);
                }
            }
        }
        if dests.is_empty() {
            return Err(exit::usage(
                "no destination: pass --dest DIR (or --config FILE with a dest)",
            )
            .into());
        }
        Ok(dests)
    }
}

impl Env {
    /// The identity file for decrypting snapshots of `name`: the flag (or
    /// SQLBAK_AGE_IDENTITY), else the config entry's `age_identity_file`, else the
    /// config's top-level one.
    pub fn identity_file(&self, flag: Option<&Path>, name: Option<&str>) -> Option<PathBuf> {
        if let Some(f) = flag {
            return Some(f.to_path_buf());
        }
        let cfg = self.config.as_ref()?;
        let entry = name.and_then(|n| cfg.entry_named(n));
        entry
            .and_then(|db| db.options.age_identity_file.clone())
            .or_else(|| cfg.defaults.age_identity_file.clone())
    }
}

/// The schedule a database runs on (`schedule` or `interval`, read in `timezone`), if any.
/// Intervals are anchored at the Unix epoch, so `15m` fires at :00, :15, :30 and :45
/// whenever the daemon was started.
pub fn schedule_of(opts: &crate::config::Options) -> Result<Option<crate::schedule::Schedule>> {
    use crate::schedule::Schedule;
    let tz = parse_timezone(opts.timezone.as_deref())?;
    match (&opts.schedule, &opts.interval) {
        (Some(_), Some(_)) => Err(exit::usage("set either schedule or interval, not both").into()),
        (Some(expr), None) => Ok(Some(
            Schedule::parse(expr, tz).map_err(|e| exit::usage(e.to_string()))?,
        )),
        (None, Some(every)) => {
            let text = humantime::format_duration(every.0).to_string();
            Ok(Some(
                Schedule::every(&text, DateTime::<Utc>::UNIX_EPOCH)
                    .map_err(|e| exit::usage(e.to_string()))?,
            ))
        }
        (None, None) => Ok(None),
    }
}

/// An IANA zone name (default UTC).
pub fn parse_timezone(name: Option<&str>) -> Result<chrono_tz::Tz> {
    match name {
        None => Ok(chrono_tz::UTC),
        Some(n) => n.parse::<chrono_tz::Tz>().map_err(|_| {
            exit::usage(format!(
                "unknown time zone {n:?}; use an IANA name such as UTC, Europe/Berlin or America/New_York"
            ))
            .into()
        }),
    }
}

/// Loads identities only when an encrypted snapshot needs them.
pub fn load_identities(file: Option<&Path>) -> Result<Option<Identities>> {
    file.map(Identities::load).transpose().map_err(Into::into)
}

/// Opens `dest`. A destination that is malformed (`s3://` without a bucket, an unknown
/// scheme or query key) is a usage error, exit 2; one that is well-formed but missing,
/// unreachable or refusing access fails later, on its first request, with exit 1.
pub fn open_storage(dest: &str) -> Result<Box<dyn Storage>> {
    storage::open(dest).map_err(|e| match e {
        StorageError::BadDestination(..) => exit::usage(e.to_string()).into(),
        other => other.into(),
    })
}

/// Opens `dest` and lists its snapshots (of `name` only, when given), oldest first.
pub fn list_snapshots(dest: &str, name: Option<&str>) -> Result<(Box<dyn Storage>, Vec<Snapshot>)> {
    let store = open_storage(dest)?;
    let prefix = name.map(|n| format!("{n}/")).unwrap_or_default();
    let objects = store.list(&prefix)?;
    let snaps =
        catalog::snapshots_from_listing(objects.iter().map(|o| (o.key.as_str(), o.size)), name);
    Ok((store, snaps))
}

/// A short age such as `3d 4h` or `12m`, for tables.
pub fn short_age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds();
    if secs < 0 {
        return "future".into();
    }
    short_duration(secs)
}

/// A duration in seconds as `3d 4h`, `2h 5m`, `12m` or `40s`.
pub fn short_duration(secs: i64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// RFC 3339, UTC, whole seconds: the one way times are printed.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages() {
        let now = Utc.with_ymd_and_hms(2024, 1, 10, 12, 0, 0).unwrap();
        let ago = |s: i64| short_age(now, now - chrono::Duration::seconds(s));
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(125), "2m");
        assert_eq!(ago(3 * 3600 + 60), "3h 1m");
        assert_eq!(ago(2 * 86400 + 7200), "2d 2h");
        assert_eq!(short_age(now, now + chrono::Duration::seconds(5)), "future");
    }
}
