//! Running unattended: the per-database lock and hooks, through the real binary.

mod common;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps a child process when dropped, so no test leaves one behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 200);
    let dest = dir.path().join("backups");
    (dir, db, dest)
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// The lock

#[test]
fn a_held_lock_turns_runs_away_with_4_and_waiting_runs_go_on_once_released() {
    let (dir, db, dest) = setup();
    // Hold the database's lock the way another run would.
    let lock = fs::File::create(dir.path().join(".app.db.sqlbak-lock")).unwrap();
    let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).unwrap();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("another sqlbak run holds the lock on")
            && err.contains(".app.db.sqlbak-lock")
            && err.contains("--wait"),
        "{err}"
    );
    assert!(snapshot_files(&dest).is_empty());

    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(held);
    });
    let started = Instant::now();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .args(["--wait", "60s"])
        .output()
        .unwrap();
    releaser.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(snapshot_files(&dest).len(), 1);

    // Too short a wait: still turned away, and told how long it waited.
    let _held = Flock::lock(
        fs::File::open(dir.path().join(".app.db.sqlbak-lock")).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .args(["--wait", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("after waiting 300ms"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn overlapping_runs_of_one_database_exclude_each_other() {
    let (dir, db, dest) = setup();
    let marker = dir.path().join("first-is-in-its-hook");
    // The first run holds the lock through its on_success hook, which waits long enough
    // for the second and third runs to collide with it.
    let first = Command::new(env!("CARGO_BIN_EXE_sqlbak"))
        .env_remove("SQLBAK_CONFIG")
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--on-success")
        .arg(format!("touch '{}'; sleep 3", marker.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first_pid = first.id();
    let mut first = Reaper(first);
    wait_for("the first run's hook", Duration::from_secs(60), || {
        marker.exists()
    });

    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("another sqlbak run")
            && err.contains(&format!("pid {first_pid}"))
            && err.contains("--wait"),
        "{err}"
    );

    let started = Instant::now();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .args(["--wait", "60s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status = first.0.wait().unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the waiting run did not wait"
    );
    assert_eq!(snapshot_files(&dest).len(), 2);
    assert_eq!(
        fs::read(dir.path().join(".app.db.sqlbak-lock")).unwrap(),
        b"",
        "the holder line is cleared on release"
    );
}

// ---------------------------------------------------------------------------------------
// Hooks

fn read_env(path: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the hook did not write {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn hooks_get_the_outcome_in_their_environment() {
    let (dir, db, dest) = setup();
    let ok_env = dir.path().join("success.env");
    let fail_env = dir.path().join("failure.env");
    let dump = |file: &Path| format!("env | grep '^SQLBAK_' | sort > '{}'", file.display());
    let out = sqlbak()
        .env("SQLBAK_ERROR", "stale, from the caller's environment")
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--on-success")
        .arg(dump(&ok_env))
        .arg("--on-failure")
        .arg(dump(&fail_env))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let taken = &json(&out)[0];
    let vars = read_env(&ok_env);
    let file = &snapshot_files(&dest)[0];
    assert_eq!(vars["SQLBAK_STATUS"], "success");
    assert_eq!(vars["SQLBAK_NAME"], "app");
    assert_eq!(vars["SQLBAK_DB"], db.display().to_string());
    assert_eq!(vars["SQLBAK_DEST"], dest.display().to_string());
    assert_eq!(vars["SQLBAK_KEY"], taken["key"].as_str().unwrap());
    assert!(file.ends_with(&vars["SQLBAK_KEY"]));
    assert_eq!(
        vars["SQLBAK_SIZE"],
        fs::metadata(file).unwrap().len().to_string()
    );
    let secs: f64 = vars["SQLBAK_DURATION"].parse().unwrap();
    assert!((0.0..60.0).contains(&secs), "{secs}");
    assert!(!vars.contains_key("SQLBAK_ERROR"), "{vars:?}");
    assert!(!fail_env.exists());

    let not_sqlite = dir.path().join("notes.db");
    fs::write(&not_sqlite, "just some text, not a database\n").unwrap();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&not_sqlite)
        .arg("--dest")
        .arg(&dest)
        .arg("--on-success")
        .arg(dump(&ok_env))
        .arg("--on-failure")
        .arg(dump(&fail_env))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let vars = read_env(&fail_env);
    assert_eq!(vars["SQLBAK_STATUS"], "failure");
    assert_eq!(vars["SQLBAK_NAME"], "notes");
    assert_eq!(vars["SQLBAK_DEST"], dest.display().to_string());
    assert!(
        vars["SQLBAK_ERROR"].contains("is not a SQLite database"),
        "{vars:?}"
    );
    assert!(!vars.contains_key("SQLBAK_KEY") && !vars.contains_key("SQLBAK_SIZE"));
    vars["SQLBAK_DURATION"].parse::<f64>().unwrap();
}

#[test]
fn a_failing_hook_never_changes_the_result() {
    let (dir, db, dest) = setup();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .args(["--on-success", "echo from-the-hook; exit 9"])
        .arg("--json")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("on_success hook") && err.contains("9") && err.contains("from-the-hook"),
        "{err}"
    );
    // The hook's stdout went to stderr, so --json output is still clean JSON.
    assert_eq!(json(&out).as_array().unwrap().len(), 1);

    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(dir.path().join("missing.db"))
        .arg("--dest")
        .arg(&dest)
        .args(["--on-failure", "exit 3"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("on_failure hook") && err.contains("does not exist"),
        "{err}"
    );
}
