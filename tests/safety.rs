//! Snapshots under load, beside other connections, killed midway, and on full disks.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Kills and reaps a child process when dropped, so no test leaves one behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `sqlite3` process committing one row to `t` and its twin to `u` per transaction,
/// fed about a thousand transactions a second (a busy application, not a saturating
/// loop that would starve every reader in rollback-journal mode) until dropped.
struct Writer {
    feeder: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _child: Reaper,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
    }
}

fn start_writer(db: &Path) -> Writer {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqlite3 must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let feeder = std::thread::spawn(move || {
        let _ = writeln!(stdin, ".timeout 20000");
        let mut i = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let line = format!(
                "BEGIN IMMEDIATE; INSERT INTO t(payload) VALUES ('w{i} ' || hex(randomblob(64))); INSERT INTO u(t_id) VALUES (last_insert_rowid()); COMMIT;\n"
            );
            if stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
                .is_err()
            {
                break;
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    Writer {
        feeder: Some(feeder),
        stop,
        _child: Reaper(child),
    }
}

/// Rows in `t`, read with the real sqlite3 tool. In rollback-journal mode sqlite3's own
/// busy handler can lose every race against a busy writer for its whole timeout on a loaded
/// machine, so a "locked" answer is retried a few times.
fn count(db: &Path) -> u64 {
    let mut last_error = String::new();
    for _ in 0..5 {
        let out = Command::new("sqlite3")
            .args(["-cmd", ".timeout 20000"])
            .arg(db)
            .arg("SELECT count(*) FROM t")
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        }
        last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            last_error.contains("locked"),
            "sqlite3 count failed: {last_error}"
        );
    }
    panic!("sqlite3 count stayed locked: {last_error}");
}

fn consistent_under_writes(mode: &str, method: &str) {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, mode, 20_000);
    let _writer = start_writer(&db);
    let start = count(&db);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&db) < start + 50 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut restored_counts = Vec::new();
    for i in 0..4 {
        let before = count(&db);
        let out = sqlbak()
            .args([
                "snapshot",
                "--method",
                method,
                "--busy-timeout",
                "20s",
                "--db",
            ])
            .arg(&db)
            .arg("--dest")
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "snapshot {i} under load: {}",
            stderr(&out)
        );
        let after = count(&db);
        let restored = dir.path().join(format!("r{i}.db"));
        let out = sqlbak()
            .args(["restore", "--name", "app", "--dest"])
            .arg(&dest)
            .arg("-o")
            .arg(&restored)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(sqlite(&restored, "PRAGMA integrity_check"), "ok");
        // The two tables are written in one transaction: a consistent image has the same ids.
        assert_eq!(
            sqlite(
                &restored,
                "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u),
                        (SELECT count(*) FROM t WHERE id NOT IN (SELECT t_id FROM u))"
            ),
            {
                let n = sqlite(&restored, "SELECT count(*) FROM t");
                format!("{n}|{n}|0")
            }
        );
        let n: u64 = sqlite(&restored, "SELECT count(*) FROM t").parse().unwrap();
        assert!(
            n >= before && n <= after,
            "image count {n} outside [{before}, {after}]"
        );
        restored_counts.push(n);
    }
    assert!(
        restored_counts.windows(2).all(|w| w[0] < w[1]),
        "the writer kept committing between snapshots: {restored_counts:?}"
    );
}

#[test]
fn consistent_while_another_process_writes_wal_streamed() {
    consistent_under_writes("wal", "stream");
}

#[test]
fn consistent_while_another_process_writes_wal_copied() {
    consistent_under_writes("wal", "backup");
}

#[test]
fn consistent_while_another_process_writes_rollback_journal() {
    consistent_under_writes("delete", "stream");
}

fn sha(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Starts a `sqlite3` session on `db`, runs `sql` in it and waits until it has, leaving
/// the session open (connection, locks and transaction as `sql` left them). Kill the
/// returned process to simulate a crash.
fn open_session(db: &Path, sql: &str) -> Child {
    let mut session = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqlite3 must be installed");
    let stdin = session.stdin.as_mut().unwrap();
    writeln!(stdin, "{sql}\nSELECT 'sqlbak-test-ready';").unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(session.stdout.as_mut().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().trim() == "sqlbak-test-ready"),
        "sqlite3 did not run {sql:?}"
    );
    session
}

/// Simulates a crash of `session`: no checkpoint, no rollback, files left as they are.
fn crash(mut session: Child) {
    session.kill().unwrap();
    session.wait().unwrap();
}

/// A database left as a crashed writer (or a replicator that owns checkpointing) leaves
/// it: frames in the -wal that nobody has checkpointed. sqlbak, as the only connection,
/// must read them but never checkpoint, truncate or delete anything.
#[test]
fn never_checkpoints_or_touches_wal_files() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 1000);
    crash(open_session(
        &db,
        "PRAGMA wal_autocheckpoint=0; INSERT INTO t(payload) SELECT 'in-wal' FROM generate_series(1, 500);",
    ));

    let wal = sidecar(&db, "-wal");
    let shm = sidecar(&db, "-shm");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the crash left frames in the WAL"
    );
    let (db_before, wal_before) = (sha(&db), sha(&wal));
    let dest = dir.path().join("backups");
    snapshot(&db, &dest);
    assert_eq!(
        sha(&db),
        db_before,
        "the database file was not written (no checkpoint)"
    );
    assert_eq!(
        sha(&wal),
        wal_before,
        "the WAL was not checkpointed, truncated or reset"
    );
    assert!(shm.exists(), "-shm is still there");

    let plain = dir.path().join("plain.db");
    gunzip_to(&snapshot_files(&dest)[0], &plain);
    assert_eq!(
        sqlite(&plain, "SELECT count(*) FROM t WHERE payload = 'in-wal'"),
        "500"
    );
}

/// While another connection has the database open, the -wal/-shm files are its own
/// and must be left alone, even those sqlbak's open would otherwise have created.
#[test]
fn leaves_sidecars_of_an_open_database_alone() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 10);
    let holder = Reaper(open_session(&db, "SELECT count(*) FROM t;"));
    assert!(sidecar(&db, "-wal").exists() && sidecar(&db, "-shm").exists());
    let dest = dir.path().join("backups");
    snapshot(&db, &dest);
    assert!(sidecar(&db, "-wal").exists() && sidecar(&db, "-shm").exists());
    drop(holder);
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigkill_mid_snapshot_leaves_nothing_listed_and_next_run_cleans_up() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("big.db");
    let dest = dir.path().join("backups");
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    sqlite(
        &db,
        "CREATE TABLE t(b BLOB); INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 20000);",
    );
    let bin = assert_cmd::cargo::cargo_bin("sqlbak");
    let run = || {
        Command::new(&bin)
            .args(["snapshot", "--jobs", "1", "--db"])
            .arg(&db)
            .arg("--dest")
            .arg(&dest)
            .arg("--tmp-dir")
            .arg(&tmp)
            .env_remove("SQLBAK_CONFIG")
            .spawn()
            .unwrap()
    };
    let mut child = run();
    let name_dir = dest.join("big");
    // Pages the compressor has not reached when the read transaction ends wait in --tmp-dir.
    wait_for(
        "the upload to start, pages waiting in --tmp-dir",
        Duration::from_secs(60),
        || {
            files_under(&name_dir).iter().any(|f| f.contains(".tmp-"))
                && !files_under(&tmp).is_empty()
        },
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let out = sqlbak()
        .args(["list", "--json", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        json(&out),
        serde_json::json!([]),
        "nothing partial is listed"
    );
    assert!(
        !files_under(&dest).is_empty(),
        "the killed run left its temporary"
    );
    assert!(
        !files_under(&tmp).is_empty(),
        "the killed run left its capture"
    );

    let status = run().wait().unwrap();
    assert!(status.success());
    let left: Vec<String> = files_under(&dest);
    assert_eq!(left.len(), 1, "stale temporaries removed: {left:?}");
    assert!(left[0].ends_with(".sqlite3.gz"));
    assert!(
        files_under(&tmp).is_empty(),
        "stale capture removed: {:?}",
        files_under(&tmp)
    );
}

/// A small tmpfs, unmounted on drop. Needs root (as CI runs); elsewhere the tests that use
/// it say so and stop.
struct TinyFs {
    path: PathBuf,
}

impl TinyFs {
    fn mount(path: PathBuf, size: &str) -> Option<TinyFs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: cannot mount a tmpfs to test a full disk");
            return None;
        }
        fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Some(TinyFs { path })
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn full_disks_fail_cleanly() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "CREATE TABLE t(b BLOB); INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 4000);",
    );
    let Some(small) = TinyFs::mount(dir.path().join("small"), "1m") else {
        return;
    };
    // Destination full.
    let dest = small.path.join("backups");
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    assert!(snapshot_files(&dest).is_empty());
    assert_eq!(
        files_under(&small.path),
        Vec::<String>::new(),
        "no partial file left"
    );

    // Temporary directory full: a copy made with the backup API, and pages that wait there
    // for a slow compressor (the database is bigger than the in-memory queue).
    let good_dest = dir.path().join("backups");
    let big = dir.path().join("big.db");
    sqlite(
        &big,
        "CREATE TABLE t(b BLOB); INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 24000);",
    );
    for (db, args) in [
        (&db, &["--method", "backup"][..]),
        (&big, &["--level", "9", "--jobs", "1"][..]),
    ] {
        let out = snapshot_in(db, &good_dest, &small.path, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("full"), "{args:?}: {}", stderr(&out));
        assert_eq!(files_under(&small.path), Vec::<String>::new());
        assert!(snapshot_files(&good_dest).is_empty());
    }

    // Restore onto a full disk: no output, no temporary.
    snapshot(&db, &good_dest);
    let target = small.path.join("restored.db");
    let out = sqlbak()
        .args(["restore", "--name", "app", "--dest"])
        .arg(&good_dest)
        .arg("-o")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    assert_eq!(files_under(&small.path), Vec::<String>::new());
}

/// A writer killed mid-transaction leaves a hot journal. Rolling it back means writing the
/// database, which sqlbak never does: it says so and how to recover, and touches nothing.
#[test]
fn hot_journal_is_a_clear_error_and_untouched() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "delete", 100);
    crash(open_session(
        &db,
        "PRAGMA cache_size=1; BEGIN IMMEDIATE; UPDATE t SET payload = hex(randomblob(200));",
    ));
    let journal = sidecar(&db, "-journal");
    assert!(journal.exists(), "the crash left a journal");
    let (db_before, journal_before) = (sha(&db), sha(&journal));

    let dest = dir.path().join("backups");
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("hot journal"), "{}", stderr(&out));
    assert_eq!(sha(&db), db_before);
    assert_eq!(sha(&journal), journal_before);
    assert!(snapshot_files(&dest).is_empty());
}
