//! Prometheus textfile-collector metrics, one series per database name.
//!
//! Each cron run is its own process and one file holds every database, so an update reads
//! the file, changes its own database's series and writes the whole file back: under an
//! exclusive lock on `.<file>.lock` beside it (so concurrent runs of different databases
//! do not lose each other's update), to a hidden temporary in the same directory that is
//! fsynced and renamed over the file (so the collector never reads half a file). Neither
//! the lock nor the temporary ends in `.prom`, so the collector ignores both.
//!
//! Parsing and rendering are pure ([`Metrics::parse`], [`Metrics::render`]); a file that
//! does not parse as ours is replaced, with a warning.

use crate::lock::FileLock;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an update waits for another run's update of the same file.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What is known about one database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Unix time the last run finished, success or failure.
    pub last_run: Option<i64>,
    /// Unix time of the last success; 0 once a run failed before any success, so that an
    /// alert on its age fires.
    pub last_success: Option<i64>,
    /// Seconds the last successful run took.
    pub last_duration: Option<f64>,
    /// Bytes stored by the last successful run.
    pub last_size: Option<u64>,
    /// Failed runs since the file was created.
    pub failures: u64,
}

/// Every database's series, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Series by database name.
    pub databases: BTreeMap<String, Series>,
}

/// One metric family: name, help, type.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "sqlbak_last_success_timestamp_seconds",
        help: "Unix time of the last successful snapshot (0: none since a failure was recorded).",
        kind: "gauge",
    },
    Family {
        name: "sqlbak_last_run_timestamp_seconds",
        help: "Unix time the last snapshot run finished, successful or not.",
        kind: "gauge",
    },
    Family {
        name: "sqlbak_last_duration_seconds",
        help: "Seconds the last successful snapshot (and prune) took.",
        kind: "gauge",
    },
    Family {
        name: "sqlbak_last_size_bytes",
        help: "Bytes stored by the last successful snapshot (compressed, encrypted if so).",
        kind: "gauge",
    },
    Family {
        name: "sqlbak_failures_total",
        help: "Failed snapshot runs.",
        kind: "counter",
    },
];

/// A metrics file that is not ours or is damaged.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    line: usize,
    why: String,
}

/// Why the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Locking the file failed.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// Writing it failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The metrics file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Metrics {
    /// Records a successful run of `name` that finished at `at` (Unix seconds).
    pub fn record_success(&mut self, name: &str, at: i64, duration: f64, size: u64) {
        let s = self.databases.entry(name.to_string()).or_default();
        s.last_run = Some(at);
        s.last_success = Some(at);
        s.last_duration = Some(duration);
        s.last_size = Some(size);
    }

    /// Records a failed run of `name` that finished at `at`.
    pub fn record_failure(&mut self, name: &str, at: i64) {
        let s = self.databases.entry(name.to_string()).or_default();
        s.last_run = Some(at);
        s.last_success.get_or_insert(0);
        s.failures += 1;
    }

    /// The text-format exposition, families in a fixed order, databases sorted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in FAMILIES {
            let samples: Vec<(&String, String)> = self
                .databases
                .iter()
                .filter_map(|(name, s)| value_of(family.name, s).map(|v| (name, v)))
                .collect();
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            for (name, value) in samples {
                let _ = writeln!(out, "{}{{name=\"{}\"}} {value}", family.name, escape(name));
            }
        }
        out
    }

    /// Parses what [`Metrics::render`] wrote. Comments and blank lines are skipped, and so
    /// are well-formed samples of `sqlbak_` families this version does not know (a newer
    /// version wrote them); anything else is an error.
    pub fn parse(text: &str) -> Result<Metrics, ParseError> {
        let mut m = Metrics::default();
        for (i, line) in text.lines().enumerate() {
            let err = |why: &str| ParseError {
                line: i + 1,
                why: why.to_string(),
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (metric, rest) = line
                .split_once("{name=\"")
                .ok_or_else(|| err("expected metric{name=\"…\"} value"))?;
            let (name, value) = parse_label_then_value(rest).ok_or_else(|| err("bad label"))?;
            if !metric.starts_with("sqlbak_") {
                return Err(err("not a sqlbak metric"));
            }
            let s = m.databases.entry(name).or_default();
            let int = || value.parse::<i64>().map_err(|_| err("expected an integer"));
            let uint = || value.parse::<u64>().map_err(|_| err("expected a count"));
            match metric {
                "sqlbak_last_success_timestamp_seconds" => s.last_success = Some(int()?),
                "sqlbak_last_run_timestamp_seconds" => s.last_run = Some(int()?),
                "sqlbak_last_duration_seconds" => {
                    s.last_duration = Some(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|d| d.is_finite())
                            .ok_or_else(|| err("expected seconds"))?,
                    )
                }
                "sqlbak_last_size_bytes" => s.last_size = Some(uint()?),
                "sqlbak_failures_total" => s.failures = uint()?,
                _ => {}
            }
        }
        Ok(m)
    }
}

fn value_of(family: &str, s: &Series) -> Option<String> {
    match family {
        "sqlbak_last_success_timestamp_seconds" => s.last_success.map(|v| v.to_string()),
        "sqlbak_last_run_timestamp_seconds" => s.last_run.map(|v| v.to_string()),
        "sqlbak_last_duration_seconds" => s.last_duration.map(|v| format!("{v:.3}")),
        "sqlbak_last_size_bytes" => s.last_size.map(|v| v.to_string()),
        "sqlbak_failures_total" => Some(s.failures.to_string()),
        _ => None,
    }
}

/// Escapes a label value as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Parses `value"} 123` (the rest after `{name="`) into the unescaped label value and the
/// sample value.
fn parse_label_then_value(rest: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut chars = rest.char_indices();
    let end = loop {
        let (i, c) = chars.next()?;
        match c {
            '\\' => match chars.next()?.1 {
                'n' => label.push('\n'),
                other => label.push(other),
            },
            '"' => break i,
            c => label.push(c),
        }
    };
    let after = rest[end + 1..].strip_prefix('}')?;
    let mut fields = after.split_whitespace();
    let value = fields.next()?;
    // A timestamp may follow; we never write one, and ignore it.
    if fields.nth(1).is_some() {
        return None;
    }
    Some((label, value))
}

/// Reads `path` (a missing file is empty; one that is not ours is replaced with a
/// warning), applies `change`, and writes the result atomically, all under the file's lock.
pub fn update(path: &Path, change: impl FnOnce(&mut Metrics)) -> Result<(), MetricsError> {
    let io_err = |source: io::Error| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or_else(|| io_err(io::Error::other("the metrics file needs a file name")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let _lock = FileLock::acquire(
        &dir.join(format!(".{file_name}.lock")),
        &path.display().to_string(),
        LOCK_WAIT,
    )?;
    let (mut metrics, mode) = match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
            match Metrics::parse(&text) {
                Ok(m) => (m, mode),
                Err(e) => {
                    tracing::warn!(
                        "{} is not a sqlbak metrics file ({e}); replacing it",
                        path.display()
                    );
                    (Metrics::default(), mode)
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Metrics::default(), 0o644),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(
                "{} is not a sqlbak metrics file (not UTF-8); replacing it",
                path.display()
            );
            (Metrics::default(), 0o644)
        }
        Err(e) => return Err(io_err(e)),
    };
    change(&mut metrics);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io_err)?;
    tmp.write_all(metrics.render().as_bytes()).map_err(io_err)?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_then_failure_render_exactly() {
        let mut m = Metrics::default();
        m.record_success("app", 1_700_000_000, 1.23456, 4096);
        m.record_failure("app", 1_700_003_600);
        m.record_failure("other", 1_700_003_601);
        assert_eq!(
            m.render(),
            "\
# HELP sqlbak_last_success_timestamp_seconds Unix time of the last successful snapshot (0: none since a failure was recorded).
# TYPE sqlbak_last_success_timestamp_seconds gauge
sqlbak_last_success_timestamp_seconds{name=\"app\"} 1700000000
sqlbak_last_success_timestamp_seconds{name=\"other\"} 0
# HELP sqlbak_last_run_timestamp_seconds Unix time the last snapshot run finished, successful or not.
# TYPE sqlbak_last_run_timestamp_seconds gauge
sqlbak_last_run_timestamp_seconds{name=\"app\"} 1700003600
sqlbak_last_run_timestamp_seconds{name=\"other\"} 1700003601
# HELP sqlbak_last_duration_seconds Seconds the last successful snapshot (and prune) took.
# TYPE sqlbak_last_duration_seconds gauge
sqlbak_last_duration_seconds{name=\"app\"} 1.235
# HELP sqlbak_last_size_bytes Bytes stored by the last successful snapshot (compressed, encrypted if so).
# TYPE sqlbak_last_size_bytes gauge
sqlbak_last_size_bytes{name=\"app\"} 4096
# HELP sqlbak_failures_total Failed snapshot runs.
# TYPE sqlbak_failures_total counter
sqlbak_failures_total{name=\"app\"} 1
sqlbak_failures_total{name=\"other\"} 1
"
        );
    }

    #[test]
    fn render_then_parse_is_identity() {
        let mut m = Metrics::default();
        m.record_success("a.b_c-d", 1, 0.5, 10);
        m.record_failure("a.b_c-d", 2);
        m.record_failure("weird \"q\" \\ \n", 3);
        m.record_success("z", 4, 2.0, 0);
        assert_eq!(Metrics::parse(&m.render()).unwrap(), m);
        assert_eq!(Metrics::parse("").unwrap(), Metrics::default());
    }

    #[test]
    fn unknown_sqlbak_families_are_dropped_foreign_lines_rejected() {
        let m = Metrics::parse(
            "sqlbak_future_thing{name=\"a\"} 3\nsqlbak_failures_total{name=\"a\"} 2\n",
        )
        .unwrap();
        assert_eq!(m.databases["a"].failures, 2);
        for bad in [
            "node_load1 0.5",
            "sqlbak_failures_total{name=\"a\"}",
            "sqlbak_failures_total{name=\"a\"} -1",
            "sqlbak_failures_total{name=\"a\"} 1 2 3",
            "sqlbak_last_duration_seconds{name=\"a\"} NaN",
            "sqlbak_failures_total{name=\"a} 1",
            "other{name=\"a\"} 1",
        ] {
            assert!(Metrics::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn update_keeps_other_databases_and_replaces_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlbak.prom");
        update(&path, |m| m.record_success("a", 10, 1.0, 5)).unwrap();
        update(&path, |m| m.record_failure("b", 11)).unwrap();
        let m = Metrics::parse(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(m.databases["a"].last_size, Some(5));
        assert_eq!(m.databases["b"].failures, 1);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::write(&path, "garbage\n").unwrap();
        update(&path, |m| m.record_failure("c", 12)).unwrap();
        let m = Metrics::parse(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(m.databases.keys().collect::<Vec<_>>(), ["c"]);
        // Only the file and its lock: no temporaries left behind.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".sqlbak.prom.lock", "sqlbak.prom"]);
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..10 {
                        update(path, |m| m.record_failure(&format!("db{t}"), i)).unwrap();
                    }
                });
            }
        });
        let m = Metrics::parse(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(m.databases.len(), 4);
        assert!(m.databases.values().all(|s| s.failures == 10));
    }
}
