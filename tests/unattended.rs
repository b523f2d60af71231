//! Running unattended: the per-database lock, through the real binary.

mod common;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 200);
    let dest = dir.path().join("backups");
    (dir, db, dest)
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
