//! Checks the retention planner against the real `restic forget`, which is
//! the behaviour it promises to reproduce. Needs `restic` (0.14) on PATH.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlbak::retention::{Reason, RetentionPolicy, plan};

/// Timeline exercising ISO week-year and calendar-year boundaries, the leap
/// day, several snapshots per period, multi-week gaps, a duplicate, and
/// snapshots exactly 10 days and 36 hours before the newest.
const TIMELINE: &[&str] = &[
    "2019-06-15 10:00:00",
    "2020-02-29 12:00:00",
    "2020-12-27 09:00:00", // Sun, 2020-W52
    "2020-12-28 09:00:00", // Mon, 2020-W53
    "2020-12-31 23:59:59", // 2020-W53
    "2021-01-01 00:00:00", // Fri, still 2020-W53
    "2021-01-03 18:00:00", // Sun, 2020-W53
    "2021-01-04 00:00:01", // Mon, 2021-W01
    "2021-03-15 08:00:00",
    "2021-11-30 23:00:00",
    "2022-07-04 12:00:00",
    "2023-01-01 00:00:00", // Sun, 2022-W52
    "2023-01-02 00:00:00", // Mon, 2023-W01
    "2024-02-28 23:59:59",
    "2024-02-29 00:00:00",
    "2024-02-29 13:30:00",
    "2024-03-01 00:00:00",
    "2024-06-10 06:00:00",
    "2024-10-01 12:00:00",
    "2024-12-29 20:00:00", // Sun, 2024-W52
    "2024-12-30 08:00:00", // Mon, 2025-W01
    "2024-12-31 23:00:00", // 2025-W01
    "2025-01-01 01:00:00", // 2025-W01
    "2025-01-05 22:00:00", // Sun, 2025-W01
    "2025-01-06 00:00:00", // Mon, 2025-W02
    "2025-03-01 10:00:00",
    "2025-03-10 12:00:00", // exactly newest - 10d
    "2025-03-10 12:00:01",
    "2025-03-15 00:00:00",
    "2025-03-18 23:59:59",
    "2025-03-19 00:00:00", // exactly newest - 36h
    "2025-03-19 00:00:01",
    "2025-03-19 23:00:00",
    "2025-03-20 09:10:00",
    "2025-03-20 09:50:00",
    "2025-03-20 10:00:00",
    "2025-03-20 10:00:00", // duplicate
    "2025-03-20 11:59:59",
    "2025-03-20 12:00:00", // newest
];

struct Case {
    restic_args: &'static [&'static str],
    policy: RetentionPolicy,
}

fn within(s: &str) -> Option<humantime::Duration> {
    Some(s.parse().expect("valid duration"))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            restic_args: &["--keep-last", "5"],
            policy: RetentionPolicy {
                keep_last: Some(5),
                ..Default::default()
            },
        },
        Case {
            restic_args: &["--keep-hourly", "6", "--keep-daily", "5"],
            policy: RetentionPolicy {
                keep_hourly: Some(6),
                keep_daily: Some(5),
                ..Default::default()
            },
        },
        Case {
            restic_args: &["--keep-weekly", "24"],
            policy: RetentionPolicy {
                keep_weekly: Some(24),
                ..Default::default()
            },
        },
        Case {
            restic_args: &["--keep-monthly", "9", "--keep-yearly", "10"],
            policy: RetentionPolicy {
                keep_monthly: Some(9),
                keep_yearly: Some(10),
                ..Default::default()
            },
        },
        Case {
            restic_args: &["--keep-within", "10d"],
            policy: RetentionPolicy {
                keep_within: within("10d"),
                ..Default::default()
            },
        },
        Case {
            restic_args: &[
                "--keep-within",
                "36h",
                "--keep-last",
                "2",
                "--keep-hourly",
                "3",
                "--keep-daily",
                "3",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "2",
                "--keep-yearly",
                "1",
            ],
            policy: RetentionPolicy {
                keep_last: Some(2),
                keep_hourly: Some(3),
                keep_daily: Some(3),
                keep_weekly: Some(4),
                keep_monthly: Some(2),
                keep_yearly: Some(1),
                keep_within: within("36h"),
            },
        },
    ]
}

/// Removes the scratch directory even when an assertion fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("retention-restic-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

fn restic(repo: &Path, args: &[&str]) -> Output {
    let output = Command::new("restic")
        .args(args)
        .arg("--no-cache")
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "retention-test")
        // restic buckets by the snapshot's local time; make that UTC.
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("failed to run restic {args:?}: {e}"));
    assert!(
        output.status.success(),
        "restic {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn require_restic() {
    match Command::new("restic").arg("version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            if !version.starts_with("restic 0.14") {
                eprintln!("warning: expected restic 0.14, found {}", version.trim());
            }
        }
        Ok(out) => panic!(
            "`restic version` failed ({}); install restic 0.14 (e.g. `apt-get install restic`) \
             to run this comparison test",
            out.status
        ),
        Err(e) => panic!(
            "restic is not installed or not on PATH ({e}); install restic 0.14 \
             (e.g. `apt-get install restic`) to run this comparison test"
        ),
    }
}

fn parse_local(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .expect("timeline entry")
        .and_utc()
}

fn restic_reason(matched: &str) -> Reason {
    match matched {
        "last snapshot" => Reason::Last,
        "hourly snapshot" => Reason::Hourly,
        "daily snapshot" => Reason::Daily,
        "weekly snapshot" => Reason::Weekly,
        "monthly snapshot" => Reason::Monthly,
        "yearly snapshot" => Reason::Yearly,
        m if m.starts_with("within ") => Reason::Within,
        other => panic!("unexpected restic reason {other:?}"),
    }
}

/// Kept snapshots as a multiset: time -> list of sorted reason lists.
type Kept = BTreeMap<DateTime<Utc>, Vec<Vec<Reason>>>;

fn restic_kept(repo: &Path, args: &[&str]) -> (Kept, usize) {
    let mut full = vec!["forget", "--dry-run", "--json"];
    full.extend_from_slice(args);
    let out = restic(repo, &full);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "restic forget output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let groups = json.as_array().expect("array of groups");
    assert_eq!(groups.len(), 1, "one host/path group expected: {json}");
    let group = &groups[0];
    let removed = group["remove"].as_array().map_or(0, Vec::len);
    let mut kept = Kept::new();
    for entry in group["reasons"].as_array().expect("reasons array") {
        let time = DateTime::parse_from_rfc3339(entry["snapshot"]["time"].as_str().expect("time"))
            .expect("RFC 3339 time")
            .with_timezone(&Utc);
        let mut reasons: Vec<Reason> = entry["matches"]
            .as_array()
            .expect("matches array")
            .iter()
            .map(|m| restic_reason(m.as_str().expect("match string")))
            .collect();
        reasons.sort();
        kept.entry(time).or_default().push(reasons);
    }
    let keep_len = group["keep"].as_array().map_or(0, Vec::len);
    assert_eq!(keep_len, kept.values().map(Vec::len).sum::<usize>());
    (kept, removed)
}

fn our_kept(times: &[DateTime<Utc>], policy: &RetentionPolicy) -> (Kept, usize) {
    let result = plan(times, |t| *t, policy).expect("non-empty policy");
    let mut kept = Kept::new();
    for d in result.kept() {
        kept.entry(d.time).or_default().push(d.reasons.clone());
    }
    (kept, result.removed().count())
}

#[test]
fn matches_restic_forget() {
    require_restic();
    let tmp = temp_dir();
    let repo = tmp.0.join("repo");
    let data = tmp.0.join("data");
    std::fs::create_dir_all(&data).expect("create data dir");
    std::fs::write(data.join("db.sqlite"), b"not really a database").expect("write data");
    let data_str = data.to_str().expect("utf-8 temp path");

    restic(&repo, &["init", "--quiet"]);
    // Two workers: each restic run is dominated by the key derivation, and
    // backups take only shared locks, so they may run concurrently.
    let (first, second) = TIMELINE.split_at(TIMELINE.len() / 2);
    std::thread::scope(|scope| {
        for half in [first, second] {
            let repo = &repo;
            scope.spawn(move || {
                for time in half {
                    restic(
                        repo,
                        &["backup", "--quiet", "--host", "h", "--time", time, data_str],
                    );
                }
            });
        }
    });

    let times: Vec<DateTime<Utc>> = TIMELINE.iter().map(|s| parse_local(s)).collect();
    for case in cases() {
        let theirs = restic_kept(&repo, case.restic_args);
        let ours = our_kept(&times, &case.policy);
        assert_eq!(
            ours, theirs,
            "kept snapshots (with reasons) and removed count differ from restic for {:?}",
            case.restic_args
        );
        let kept = ours.0.values().map(Vec::len).sum::<usize>();
        assert_eq!(ours.1 + kept, TIMELINE.len());
        // A policy that keeps or removes everything would prove little.
        assert!(
            kept > 1 && ours.1 > 0,
            "uninformative case {:?}",
            case.restic_args
        );
        eprintln!("{:?}: kept {kept}, removed {}", case.restic_args, ours.1);
    }
}
