//! `prune` and `snapshot --keep-*` on a local destination.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A destination holding copies of one real snapshot of `name` under the given times
/// (`YYYYMMDDTHHMMSSZ`).
fn timeline(dir: &Path, name: &str, stamps: &[String]) -> PathBuf {
    let dest = dir.join("backups");
    let db = dir.join(format!("{name}.db"));
    make_db(&db, "wal", 5);
    snapshot(&db, &dest);
    let real = snapshot_files(&dest)
        .into_iter()
        .find(|p| p.to_str().unwrap().contains(&format!("/{name}/")))
        .unwrap();
    for stamp in stamps {
        fs::copy(
            &real,
            dest.join(name).join(format!("{name}-{stamp}.sqlite3.gz")),
        )
        .unwrap();
    }
    fs::remove_file(real).unwrap();
    dest
}

/// Two snapshots a day (06:00 and 18:00) for `days` days from 2024-01-01.
fn twice_daily(days: u32) -> Vec<String> {
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    (0..days)
        .flat_map(|d| {
            let day = start + chrono::Days::new(d.into());
            ["060000", "180000"].map(|t| format!("{}T{t}Z", day.format("%Y%m%d")))
        })
        .collect()
}

fn prune(dest: &Path, args: &[&str]) -> std::process::Output {
    sqlbak()
        .args(["prune", "--dest"])
        .arg(dest)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dry_run_reports_and_real_run_deletes_exactly_that() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(20));
    let before = snapshot_files(&dest).len();
    assert_eq!(before, 40);
    let policy = [
        "--keep-last",
        "3",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "2",
    ];

    let dry = prune(&dest, &[&["--dry-run", "--json"][..], &policy[..]].concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(
        snapshot_files(&dest).len(),
        before,
        "a dry run deletes nothing"
    );
    let plan = json(&dry);
    let rows = plan.as_array().unwrap();
    assert_eq!(rows.len(), 40);
    let kept: Vec<&str> = rows
        .iter()
        .filter(|r| r["keep"] == true)
        .map(|r| r["time"].as_str().unwrap())
        .collect();
    // last 3: Jan 20 18:00, Jan 20 06:00, Jan 19 18:00; daily 7: 18:00 of Jan 14..20;
    // weekly 2 (ISO): newest of W03 (Jan 20) and of W02 (Jan 14 18:00).
    assert_eq!(
        kept,
        vec![
            "2024-01-20T18:00:00Z",
            "2024-01-20T06:00:00Z",
            "2024-01-19T18:00:00Z",
            "2024-01-18T18:00:00Z",
            "2024-01-17T18:00:00Z",
            "2024-01-16T18:00:00Z",
            "2024-01-15T18:00:00Z",
            "2024-01-14T18:00:00Z",
        ]
    );
    assert_eq!(
        rows[0]["reasons"],
        serde_json::json!(["last", "daily", "weekly"])
    );
    let jan14 = rows
        .iter()
        .find(|r| r["time"] == "2024-01-14T18:00:00Z")
        .unwrap();
    assert_eq!(jan14["reasons"], serde_json::json!(["daily", "weekly"]));
    for row in rows {
        assert_eq!(
            row["keep"] == true,
            !row["reasons"].as_array().unwrap().is_empty()
        );
        assert_eq!(row["name"], "app");
    }

    let real = prune(&dest, &[&["--json"][..], &policy[..]].concat());
    assert!(real.status.success(), "{}", stderr(&real));
    assert_eq!(
        json(&real),
        plan,
        "the real run carries out the dry run's plan"
    );
    let left: Vec<String> = snapshot_files(&dest)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 8);
    assert!(left.contains(&"app-20240114T180000Z.sqlite3.gz".to_string()));
    assert!(!left.contains(&"app-20240114T060000Z.sqlite3.gz".to_string()));

    // Pruning again with the same policy is a no-op.
    let again = prune(&dest, &policy);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("keeping 8 of 8"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn human_output_shows_reasons_and_coverage() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(10));
    let out = prune(&dest, &["--dry-run", "--keep-daily", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("keeping 3 of 20, would remove 17"), "{text}");
    assert!(
        text.contains("keep    2024-01-10T18:00:00Z  daily"),
        "{text}"
    );
    assert!(text.contains("remove  2024-01-10T06:00:00Z"), "{text}");
    assert!(
        text.contains("coverage: 3 snapshots from 2024-01-08T18:00:00Z to 2024-01-10T18:00:00Z, widest gap 1d 0h"),
        "{text}"
    );
}

#[test]
fn foreign_objects_and_other_names_are_never_touched() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(5));
    let foreign = [
        dest.join("app").join("README.txt"),
        dest.join("app").join("app-20200101T000000Z.sqlite3"),
        dest.join("app")
            .join(".app-20200101T000000Z.sqlite3.gz.tmp-otherhost-1-abcdef"),
        dest.join("notes.txt"),
    ];
    for f in &foreign {
        fs::write(f, "not a snapshot").unwrap();
    }
    let other = dest.join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("other-20200101T000000Z.sqlite3.gz"), "x").unwrap();

    let out = prune(&dest, &["--name", "app", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        snapshot_files(&dest.join("app").parent().unwrap().join("app")).len(),
        1
    );
    for f in &foreign {
        assert!(f.exists(), "{} was deleted", f.display());
    }
    assert!(other.join("other-20200101T000000Z.sqlite3.gz").exists());
}

#[test]
fn a_policy_without_rules_is_refused() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(3));
    for args in [
        &[][..],
        &["--keep-last", "0"][..],
        &["--keep-within", "0s"][..],
    ] {
        let out = prune(&dest, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("--keep"), "{}", stderr(&out));
    }
    assert_eq!(snapshot_files(&dest).len(), 6);
    let out = prune(&dest, &["--keep-within", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keep_within_is_relative_to_the_newest_snapshot() {
    let dir = TempDir::new().unwrap();
    // Years ago: "now"-relative rules would delete everything; ours keeps the last 36h.
    let dest = timeline(dir.path(), "app", &twice_daily(10));
    let out = prune(&dest, &["--keep-within", "36h", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kept = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["keep"] == true)
        .count();
    assert_eq!(
        kept, 3,
        "Jan 10 18:00, Jan 10 06:00, Jan 9 18:00 (Jan 9 06:00 is exactly 36h)"
    );
}

#[test]
fn snapshot_prunes_only_after_success() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(5));
    // A failed snapshot never prunes.
    let out = sqlbak()
        .args(["snapshot", "--name", "app", "--db"])
        .arg(dir.path().join("missing.db"))
        .arg("--dest")
        .arg(&dest)
        .args(["--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(snapshot_files(&dest).len(), 10);

    // A successful one prunes to the policy, keeping the new snapshot.
    let out = sqlbak()
        .args(["snapshot", "--json", "--db"])
        .arg(dir.path().join("app.db"))
        .arg("--dest")
        .arg(&dest)
        .args(["--keep-last", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let taken = json(&out);
    assert_eq!(taken[0]["pruned"].as_array().unwrap().len(), 9);
    let left = snapshot_files(&dest);
    assert_eq!(left.len(), 2);
    let new_key = taken[0]["key"].as_str().unwrap();
    assert!(
        left.iter().any(|p| p.ends_with(new_key)),
        "the new snapshot is kept"
    );
}

#[test]
fn config_retention_per_database() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(6));
    let other_stamps = twice_daily(6);
    {
        let other_db = dir.path().join("other.db");
        make_db(&other_db, "wal", 3);
        snapshot(&other_db, &dest);
        let real = snapshot_files(&dest)
            .into_iter()
            .find(|p| p.to_str().unwrap().contains("/other/"))
            .unwrap();
        for stamp in &other_stamps {
            fs::copy(
                &real,
                dest.join("other").join(format!("other-{stamp}.sqlite3.gz")),
            )
            .unwrap();
        }
        fs::remove_file(real).unwrap();
    }
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\n[retention]\nkeep_last = 1\n\n[[databases]]\npath = {:?}\n\n[[databases]]\npath = {:?}\n[databases.retention]\nkeep_daily = 3\n",
            dest.display().to_string(),
            dir.path().join("app.db").display().to_string(),
            dir.path().join("other.db").display().to_string(),
        ),
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("prune")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let count = |name: &str| snapshot_files(&dest.join(name).parent().unwrap().join(name)).len();
    assert_eq!(count("app"), 1, "keep_last 1 from the top level");
    assert_eq!(
        count("other"),
        3,
        "keep_daily 3 for other, plus keep_last 1 (the newest, already a daily)"
    );
}

#[test]
fn snapshot_never_prunes_the_snapshot_it_just_stored() {
    let dir = TempDir::new().unwrap();
    // A snapshot dated in the future (a clock that was once wrong) is the "newest".
    let dest = timeline(dir.path(), "app", &["20990101T000000Z".to_string()]);
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(dir.path().join("app.db"))
        .arg("--dest")
        .arg(&dest)
        .args(["--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("just stored"), "{}", stderr(&out));
    assert_eq!(snapshot_files(&dest).len(), 2, "both kept: nothing deleted");
}

#[test]
fn snapshot_with_config_layers_keep_flags_and_prune_skips_databases_without_rules() {
    let dir = TempDir::new().unwrap();
    let dest = timeline(dir.path(), "app", &twice_daily(3));
    let other = dir.path().join("other.db");
    make_db(&other, "wal", 3);
    snapshot(&other, &dest);
    snapshot(&other, &dest);
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\n[[databases]]\npath = {:?}\n[[databases]]\npath = {:?}\n",
            dest.display().to_string(),
            dir.path().join("app.db").display().to_string(),
            other.display().to_string(),
        ),
    )
    .unwrap();
    let count = |name: &str| {
        snapshot_files(&dest)
            .iter()
            .filter(|p| p.to_str().unwrap().contains(&format!("/{name}/")))
            .count()
    };
    // --keep-* on the command line applies to every configured database.
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--name", "app", "--keep-last", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count("app"), 2);

    // prune --config: a database without rules is kept whole, the others are pruned.
    fs::write(
        &config,
        format!(
            "dest = {:?}\n[[databases]]\npath = {:?}\n[databases.retention]\nkeep_last = 1\n[[databases]]\npath = {:?}\n",
            dest.display().to_string(),
            dir.path().join("app.db").display().to_string(),
            other.display().to_string(),
        ),
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("prune")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count("app"), 1);
    assert_eq!(count("other"), 2, "no rules: every snapshot kept");
    // Asking for that database by name is still an error.
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["prune", "--name", "other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
