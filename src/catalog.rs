//! Snapshot naming: the one place that maps keys to (name, time, encrypted) and back.
//!
//! Snapshot times come from key names alone, so listing and choosing a snapshot for
//! `restore --at` never reads snapshot content. Pure: no I/O.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use std::fmt;

/// File-name suffix of a compressed snapshot.
pub const GZ_SUFFIX: &str = ".sqlite3.gz";
/// File-name suffix of a compressed, then age-encrypted snapshot.
pub const AGE_SUFFIX: &str = ".sqlite3.gz.age";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const TIME_LEN: usize = 16;
const MAX_NAME_LEN: usize = 128;

/// Why a database name cannot be used in a storage key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Names become directory and file names; an empty one cannot.
    #[error("the snapshot name is empty; pass --name")]
    Empty,
    /// Keeps keys portable across file systems and object stores.
    #[error(
        "snapshot name {0:?} may only contain letters, digits, '.', '_' and '-', and must not start with '.' or '-'; pass --name"
    )]
    BadCharacters(String),
    /// Keeps keys well under every backend's length limit.
    #[error("snapshot name {0:?} is longer than {MAX_NAME_LEN} characters; pass a shorter --name")]
    TooLong(String),
}

/// Checks that `name` is safe to use as a directory and key component.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_string()));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok_chars || name.starts_with('.') || name.starts_with('-') {
        return Err(NameError::BadCharacters(name.to_string()));
    }
    Ok(())
}

/// The identity of one snapshot, as encoded in its storage key
/// `<name>/<name>-<YYYYMMDDTHHMMSSZ>.sqlite3.gz[.age]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotKey {
    /// Database name (the key's directory).
    pub name: String,
    /// Capture time, UTC, whole seconds.
    pub time: DateTime<Utc>,
    /// Whether the object is age-encrypted (`.age` suffix).
    pub encrypted: bool,
}

impl SnapshotKey {
    /// A key for a snapshot captured at `time`; sub-second precision is dropped because
    /// keys have second resolution.
    pub fn new(name: &str, time: DateTime<Utc>, encrypted: bool) -> Self {
        SnapshotKey {
            name: name.to_string(),
            time: time.trunc_subsecs(0),
            encrypted,
        }
    }

    /// The object's file name, without the name directory.
    pub fn file_name(&self) -> String {
        let suffix = if self.encrypted {
            AGE_SUFFIX
        } else {
            GZ_SUFFIX
        };
        format!("{}-{}{}", self.name, self.time.format(TIME_FORMAT), suffix)
    }

    /// The full key relative to the destination root.
    pub fn key(&self) -> String {
        format!("{}/{}", self.name, self.file_name())
    }

    /// Parses a key relative to the destination root; anything that is not exactly a
    /// snapshot key (temporaries, foreign files, a name that does not match its directory)
    /// yields `None`, so it is never listed, restored or pruned.
    pub fn parse(key: &str) -> Option<SnapshotKey> {
        let (dir, file) = key.split_once('/')?;
        if file.contains('/') || validate_name(dir).is_err() {
            return None;
        }
        let (stem, encrypted) = if let Some(s) = file.strip_suffix(AGE_SUFFIX) {
            (s, true)
        } else if let Some(s) = file.strip_suffix(GZ_SUFFIX) {
            (s, false)
        } else {
            return None;
        };
        let split = stem.len().checked_sub(TIME_LEN + 1)?;
        if !stem.is_char_boundary(split) {
            return None;
        }
        let (name, rest) = stem.split_at(split);
        let stamp = rest.strip_prefix('-')?;
        if name != dir {
            return None;
        }
        let naive = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT).ok()?;
        let time = naive.and_utc();
        // Reject non-canonical spellings so that one instant has exactly one key.
        if time.format(TIME_FORMAT).to_string() != stamp {
            return None;
        }
        Some(SnapshotKey {
            name: name.to_string(),
            time,
            encrypted,
        })
    }
}

impl fmt::Display for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One stored snapshot as seen in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// What the key says.
    pub key: SnapshotKey,
    /// Stored size in bytes (compressed, and encrypted if so).
    pub size: u64,
}

/// Turns a raw storage listing into snapshots of `name` (or of every name), oldest first;
/// keys that are not snapshot keys are skipped.
pub fn snapshots_from_listing<'a>(
    objects: impl IntoIterator<Item = (&'a str, u64)>,
    name: Option<&str>,
) -> Vec<Snapshot> {
    let mut out: Vec<Snapshot> = objects
        .into_iter()
        .filter_map(|(key, size)| SnapshotKey::parse(key).map(|key| Snapshot { key, size }))
        .filter(|s| name.is_none_or(|n| s.key.name == n))
        .collect();
    out.sort_by(|a, b| {
        (a.key.name.as_str(), a.key.time, a.key.encrypted).cmp(&(
            b.key.name.as_str(),
            b.key.time,
            b.key.encrypted,
        ))
    });
    out
}

/// The newest snapshot taken at or before `at` (the newest of all without `at`).
pub fn pick_at(snapshots: &[Snapshot], at: Option<DateTime<Utc>>) -> Option<&Snapshot> {
    snapshots
        .iter()
        .filter(|s| at.is_none_or(|at| s.key.time <= at))
        .max_by_key(|s| s.key.time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn key_round_trips() {
        let k = SnapshotKey::new("app", t(2024, 1, 2, 3, 4, 5), false);
        assert_eq!(k.key(), "app/app-20240102T030405Z.sqlite3.gz");
        assert_eq!(SnapshotKey::parse(&k.key()), Some(k));
        let e = SnapshotKey::new("my-app.v2", t(2024, 12, 31, 23, 59, 59), true);
        assert_eq!(
            e.key(),
            "my-app.v2/my-app.v2-20241231T235959Z.sqlite3.gz.age"
        );
        assert_eq!(SnapshotKey::parse(&e.key()), Some(e));
    }

    #[test]
    fn new_drops_subseconds() {
        let base = t(2024, 1, 2, 3, 4, 5);
        let k = SnapshotKey::new("a", base + chrono::Duration::milliseconds(999), false);
        assert_eq!(k.time, base);
    }

    #[test]
    fn parse_rejects_foreign_and_temporary_names() {
        for bad in [
            "app/app-20240102T030405Z.sqlite3",
            "app/app-20240102T030405Z.sqlite3.gz.tmp",
            "app/.app-20240102T030405Z.sqlite3.gz.tmp-host-1-x",
            "app/other-20240102T030405Z.sqlite3.gz",
            "app/app-20241302T030405Z.sqlite3.gz",
            "app/app-2024012T030405Z.sqlite3.gz",
            "app/app20240102T030405Z.sqlite3.gz",
            "app-20240102T030405Z.sqlite3.gz",
            "x/app/app-20240102T030405Z.sqlite3.gz",
            "app/app-20240102T030405z.sqlite3.gz",
            "app/-20240102T030405Z.sqlite3.gz",
            "app/README",
            "",
        ] {
            assert_eq!(SnapshotKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_with_dashes_and_digits_parse() {
        let k = SnapshotKey::parse("db-2024/db-2024-20240102T030405Z.sqlite3.gz").unwrap();
        assert_eq!(k.name, "db-2024");
        assert_eq!(k.time, t(2024, 1, 2, 3, 4, 5));
    }

    #[test]
    fn validate_name_rules() {
        assert!(validate_name("app").is_ok());
        assert!(validate_name("App_1.db-x").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        for bad in [".hidden", "-x", "a/b", "a b", "ä", "a\\b", ".."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(129)).is_err());
    }

    fn snaps(times: &[DateTime<Utc>]) -> Vec<Snapshot> {
        times
            .iter()
            .map(|&time| Snapshot {
                key: SnapshotKey::new("app", time, false),
                size: 1,
            })
            .collect()
    }

    #[test]
    fn pick_at_chooses_newest_not_after() {
        let s = snaps(&[
            t(2024, 1, 1, 0, 0, 0),
            t(2024, 1, 2, 0, 0, 0),
            t(2024, 1, 3, 0, 0, 0),
        ]);
        assert_eq!(pick_at(&s, None).unwrap().key.time, t(2024, 1, 3, 0, 0, 0));
        assert_eq!(
            pick_at(&s, Some(t(2024, 1, 2, 0, 0, 0))).unwrap().key.time,
            t(2024, 1, 2, 0, 0, 0)
        );
        assert_eq!(
            pick_at(&s, Some(t(2024, 1, 2, 23, 59, 59)))
                .unwrap()
                .key
                .time,
            t(2024, 1, 2, 0, 0, 0)
        );
        assert!(pick_at(&s, Some(t(2023, 12, 31, 23, 59, 59))).is_none());
        assert!(pick_at(&[], None).is_none());
    }

    #[test]
    fn listing_filters_and_sorts() {
        let objs = vec![
            ("app/app-20240103T000000Z.sqlite3.gz", 3u64),
            ("app/app-20240101T000000Z.sqlite3.gz", 1),
            ("other/other-20240102T000000Z.sqlite3.gz.age", 2),
            ("app/.app-20240104T000000Z.sqlite3.gz.tmp-h-1-x", 9),
            ("notes.txt", 9),
        ];
        let all = snapshots_from_listing(objs.clone(), None);
        let keys: Vec<String> = all.iter().map(|s| s.key.key()).collect();
        assert_eq!(
            keys,
            vec![
                "app/app-20240101T000000Z.sqlite3.gz",
                "app/app-20240103T000000Z.sqlite3.gz",
                "other/other-20240102T000000Z.sqlite3.gz.age",
            ]
        );
        let app = snapshots_from_listing(objs, Some("app"));
        assert_eq!(app.len(), 2);
        assert_eq!(app[1].size, 3);
    }
}
