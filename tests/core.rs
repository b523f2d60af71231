//! Snapshot, list, restore and verify through the real binary, on real database files.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use tempfile::TempDir;

fn round_trip(journal_mode: &str) {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, journal_mode, 3000);
    let before = sqlite(&db, "SELECT count(*), sum(length(payload)) FROM t");

    let out = snapshot(&db, &dest);
    assert!(
        stdout(&out).is_empty(),
        "snapshot is quiet on success: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).is_empty(),
        "snapshot is quiet on success: {}",
        stderr(&out)
    );

    // Never leaves -wal/-shm/-journal files that were not there.
    let leftovers: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("app.db"))
        .collect();
    assert_eq!(leftovers, vec!["app.db"]);

    let snaps = snapshot_files(&dest);
    assert_eq!(snaps.len(), 1);
    let file = snaps[0].file_name().unwrap().to_str().unwrap();
    assert!(
        file.starts_with("app-") && file.ends_with("Z.sqlite3.gz"),
        "{file}"
    );
    assert_eq!(snaps[0].parent().unwrap(), dest.join("app"));

    // Plain gzip restores it, and sqlite3 is happy with the result.
    let plain = dir.path().join("plain.db");
    gunzip_to(&snaps[0], &plain);
    assert_eq!(sqlite(&plain, "PRAGMA integrity_check"), "ok");
    assert_eq!(
        sqlite(&plain, "SELECT count(*), sum(length(payload)) FROM t"),
        before
    );
    assert_eq!(sqlite(&plain, "PRAGMA journal_mode"), journal_mode);

    // sqlbak restores it too.
    let restored = dir.path().join("restored.db");
    let out = sqlbak()
        .args(["restore", "--dest"])
        .arg(&dest)
        .args(["--name", "app", "-o"])
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("app/app-"),
        "names the snapshot: {}",
        stdout(&out)
    );
    assert_eq!(
        sqlite(&restored, "SELECT count(*), sum(length(payload)) FROM t"),
        before
    );
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&plain).unwrap());
}

#[test]
fn round_trip_wal() {
    round_trip("wal");
}

#[test]
fn round_trip_rollback_journal() {
    round_trip("delete");
}

#[test]
fn files_and_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, "wal", 10);
    snapshot(&db, &dest);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&dest.join("app")), 0o700);
    assert_eq!(mode(&snapshot_files(&dest)[0]), 0o600);
}

#[test]
fn list_json_and_table() {
    let dir = TempDir::new().unwrap();
    let dest = dir.path().join("backups");
    for name in ["app", "other"] {
        let db = dir.path().join(format!("{name}.db"));
        make_db(&db, "wal", 10);
        snapshot(&db, &dest);
    }
    // Foreign files and temporaries are never listed.
    fs::write(dest.join("app").join("notes.txt"), "x").unwrap();
    fs::write(
        dest.join("app")
            .join(".app-20200101T000000Z.sqlite3.gz.tmp-h-1-abc"),
        "x",
    )
    .unwrap();

    let out = sqlbak()
        .args(["list", "--json", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success());
    let items = json(&out);
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        let name = item["name"].as_str().unwrap();
        let time = item["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(time).is_ok());
        assert!(
            item["key"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}/{name}-"))
        );
        assert!(item["size"].as_u64().unwrap() > 0);
        assert_eq!(item["encrypted"], false);
    }
    let out = sqlbak()
        .args(["list", "--name", "other", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    let table = stdout(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("other") && !table.contains("app "),
        "{table}"
    );
}

/// Copies one real snapshot under keys with chosen times, each holding a marker row.
fn timeline(dir: &Path, dest: &Path, stamps: &[&str]) {
    let db = dir.join("app.db");
    make_db(&db, "wal", 5);
    sqlite(&db, "CREATE TABLE marker(stamp TEXT)");
    for stamp in stamps {
        sqlite(
            &db,
            &format!("DELETE FROM marker; INSERT INTO marker VALUES ('{stamp}')"),
        );
        snapshot(&db, dest);
        let newest = snapshot_files(dest)
            .into_iter()
            .find(|p| !p.to_str().unwrap().contains("-20240"))
            .unwrap();
        fs::rename(
            &newest,
            dest.join("app").join(format!("app-{stamp}.sqlite3.gz")),
        )
        .unwrap();
    }
}

fn restore_at(dest: &Path, at: Option<&str>, out_path: &Path) -> std::process::Output {
    let mut cmd = sqlbak();
    cmd.args(["restore", "--name", "app", "--dest"])
        .arg(dest)
        .arg("-o")
        .arg(out_path);
    if let Some(at) = at {
        cmd.args(["--at", at]);
    }
    cmd.output().unwrap()
}

#[test]
fn restore_by_time_picks_newest_at_or_before() {
    let dir = TempDir::new().unwrap();
    let dest = dir.path().join("backups");
    timeline(
        dir.path(),
        &dest,
        &[
            "20240101T000000Z",
            "20240101T120000Z",
            "20240102T000000Z",
            "20240105T083000Z",
        ],
    );
    let cases = [
        (Some("2024-01-01"), "20240101T000000Z"),
        (Some("2024-01-01T11:59:59Z"), "20240101T000000Z"),
        (Some("2024-01-01 12:00"), "20240101T120000Z"),
        (Some("2024-01-01T14:00:00+02:00"), "20240101T120000Z"),
        (Some("2024-01-04"), "20240102T000000Z"),
        (Some("1h ago"), "20240105T083000Z"),
        (None, "20240105T083000Z"),
    ];
    for (i, (at, want)) in cases.iter().enumerate() {
        let out_path = dir.path().join(format!("r{i}.db"));
        let out = restore_at(&dest, *at, &out_path);
        assert!(out.status.success(), "--at {at:?}: {}", stderr(&out));
        assert_eq!(
            sqlite(&out_path, "SELECT stamp FROM marker"),
            *want,
            "--at {at:?}"
        );
        assert!(
            stdout(&out).contains(want),
            "prints the chosen snapshot: {}",
            stdout(&out)
        );
    }
    // Before the first snapshot: nothing to restore, exit 3, no file.
    let out_path = dir.path().join("none.db");
    let out = restore_at(&dest, Some("2023-12-31T23:59:59Z"), &out_path);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("oldest is from 2024-01-01T00:00:00Z"),
        "{}",
        stderr(&out)
    );
    assert!(!out_path.exists());
    // Nonsense time: usage error, exit 2.
    let out = restore_at(&dest, Some("last tuesday"), &out_path);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
}

#[test]
fn restore_never_clobbers_without_force() {
    let dir = TempDir::new().unwrap();
    let dest = dir.path().join("backups");
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 50);
    snapshot(&db, &dest);

    let target = dir.path().join("live.db");
    make_db(&target, "delete", 7);
    let original = fs::read(&target).unwrap();
    let out = restore_at(&dest, None, &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(fs::read(&target).unwrap(), original, "untouched");

    // A -wal beside a missing database still counts as a live database.
    let ghost = dir.path().join("ghost.db");
    fs::write(dir.path().join("ghost.db-wal"), b"x").unwrap();
    let out = restore_at(&dest, None, &ghost);
    assert_eq!(out.status.code(), Some(1));
    assert!(!ghost.exists());

    // --force replaces the file and removes the old database's -wal/-shm.
    fs::write(dir.path().join("live.db-wal"), b"stale wal").unwrap();
    fs::write(dir.path().join("live.db-shm"), b"stale shm").unwrap();
    let out = sqlbak()
        .args(["restore", "--force", "--name", "app", "--dest"])
        .arg(&dest)
        .arg("-o")
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sqlite(&target, "SELECT count(*) FROM t"), "50");
    assert!(!dir.path().join("live.db-shm").exists() || sqlite(&target, "SELECT 1") == "1");
    // The snapshot's lock file beside app.db stays by design (see src/lock.rs).
    let strays: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.contains("sqlbak") || f.contains("stale"))
        .filter(|f| !f.ends_with(".sqlbak-lock"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

#[test]
fn two_snapshots_in_one_second_get_distinct_keys() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, "wal", 10);
    for _ in 0..3 {
        snapshot(&db, &dest);
    }
    assert_eq!(snapshot_files(&dest).len(), 3);
}

#[test]
fn verify_good_and_corrupt_snapshots() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, "wal", 2000);
    snapshot(&db, &dest);
    let out = sqlbak()
        .args(["verify", "--json", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["sha256"].as_str().unwrap().len(), 64);

    // Flip a byte in the middle of the compressed data.
    let snap = &snapshot_files(&dest)[0];
    let mut bytes = fs::read(snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(snap, &bytes).unwrap();
    let out = sqlbak()
        .args(["verify", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));

    // Restore of a corrupt snapshot leaves no output and no temporary.
    let target = dir.path().join("out").join("r.db");
    fs::create_dir(dir.path().join("out")).unwrap();
    let out = restore_at(&dest, None, &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert!(files_under(&dir.path().join("out")).is_empty());
}

#[test]
fn truncated_snapshots_are_rejected_at_every_cut() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, "delete", 2000);
    snapshot(&db, &dest);
    let snap = snapshot_files(&dest)[0].clone();
    let full = fs::read(&snap).unwrap();
    for cut in [0, 10, full.len() / 3, full.len() - 40, full.len() - 1] {
        fs::write(&snap, &full[..cut]).unwrap();
        let target = dir.path().join("r.db");
        let out = restore_at(&dest, None, &target);
        assert_eq!(out.status.code(), Some(1), "cut at {cut}: {}", stderr(&out));
        assert!(!target.exists(), "cut at {cut}");
        let err = stderr(&out);
        assert!(
            err.contains("truncated") || err.contains("empty") || err.contains("corrupt"),
            "{err}"
        );
    }
}

#[test]
fn bad_sources_fail_clearly_and_create_nothing() {
    let dir = TempDir::new().unwrap();
    let dest = dir.path().join("backups");
    let missing = dir.path().join("missing.db");
    let text = dir.path().join("notes.db");
    fs::write(&text, "hello, this is not a database at all").unwrap();
    let empty = dir.path().join("empty.db");
    fs::write(&empty, "").unwrap();
    for (path, needle) in [
        (&missing, "does not exist"),
        (&text, "not a SQLite database"),
        (&empty, "empty"),
        (&dir.path().to_path_buf(), "not a regular file"),
    ] {
        let out = sqlbak()
            .args(["snapshot", "--name", "x", "--db"])
            .arg(path)
            .arg("--dest")
            .arg(&dest)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        assert!(
            stderr(&out).contains(needle),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"));
    }
    assert!(!missing.exists(), "never creates the source");
    assert!(snapshot_files(&dest).is_empty());
}

#[test]
fn unwritable_destination_fails_clearly() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 10);
    let file = dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Not a directory"), "{}", stderr(&out));
}

#[test]
fn missing_destination_and_usage_errors() {
    let dir = TempDir::new().unwrap();
    let out = sqlbak()
        .args(["list", "--dest"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = sqlbak()
        .args(["snapshot", "--db", "x.db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--dest"), "{}", stderr(&out));
    let out = sqlbak().args(["snapshot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = sqlbak()
        .args(["list", "--dest", "ftp://host/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown scheme"), "{}", stderr(&out));
    let out = sqlbak()
        .args(["snapshot", "--db", "x.db", "--dest", "d", "--level", "12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_destinations_are_usage_errors() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 10);
    let restored = dir.path().join("restored.db");
    let (db, restored) = (db.to_str().unwrap(), restored.to_str().unwrap());
    for (dest, says) in [
        ("s3://", "the bucket name is missing"),
        ("s3://b?bogus=1", "unknown query key \"bogus\""),
        ("s3://b/p?region=", "needs a value"),
        ("ftp://x/y", "unknown scheme ftp://"),
        ("file://relative/path", "needs an absolute path"),
        ("", "the destination is empty"),
    ] {
        for args in [
            vec!["snapshot", "--db", db, "--dest", dest],
            vec!["list", "--dest", dest],
            vec!["restore", "--dest", dest, "-o", restored],
            vec!["verify", "--dest", dest],
            vec!["prune", "--keep-last", "1", "--dest", dest],
            vec!["check", "--name", "app", "--max-age", "1h", "--dest", dest],
        ] {
            let out = sqlbak().args(&args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains(&format!("unsupported destination {dest:?}")) && err.contains(says),
                "{args:?}: {err}"
            );
        }
    }
    assert!(!Path::new(restored).exists());
    assert!(
        files_under(dir.path())
            .iter()
            .all(|f| f.starts_with("app.db"))
    );

    // In a config file, for every database: named, and nothing is snapshotted.
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!("dest = \"{}\"\n[[databases]]\npath = \"{db}\"\n[[databases]]\npath = \"{db}\"\nname = \"other\"\ndest = \"s3://b?colour=red\"\n", dir.path().join("ok").display()),
    )
    .unwrap();
    let out = sqlbak()
        .arg("snapshot")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("database other") && err.contains("unknown query key \"colour\""),
        "{err}"
    );
    assert!(!dir.path().join("ok").exists(), "nothing was attempted");
    let out = sqlbak()
        .arg("list")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));

    // A well-formed destination that fails when used is a failure, not a usage error.
    let out = sqlbak()
        .args(["list", "--dest"])
        .arg(dir.path().join("app.db").join("sub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn file_url_destination() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 10);
    let dest = dir.path().join("b");
    let url = format!("file://{}", dest.display());
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .args(["--dest", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_files(&dest).len(), 1);
}

#[test]
fn vacuum_method_round_trip() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, "wal", 500);
    sqlite(&db, "DELETE FROM t WHERE id % 2 = 0");
    let out = sqlbak()
        .args(["snapshot", "--method", "vacuum", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = dir.path().join("plain.db");
    gunzip_to(&snapshot_files(&dest)[0], &plain);
    assert_eq!(sqlite(&plain, "SELECT count(*) FROM t"), "250");
    assert_eq!(sqlite(&plain, "PRAGMA integrity_check"), "ok");
}

/// Pages stream from the read transaction into the compressor: a database that fits the
/// in-memory queue needs no temporary copy (a --tmp-dir that cannot hold one does not
/// matter), and the image is the database's own pages, byte for byte, committed WAL frames
/// included. `--method backup` always copies into --tmp-dir first.
#[test]
fn snapshots_stream_without_a_temporary_copy() {
    let dir = TempDir::new().unwrap();
    let not_a_dir = dir.path().join("not-a-dir");
    fs::write(&not_a_dir, "").unwrap();
    let take = |db: &Path, dest: &Path, extra: &[&str]| snapshot_in(db, dest, &not_a_dir, extra);

    for mode in ["wal", "delete"] {
        let db = dir.path().join(format!("{mode}.db"));
        make_db(&db, mode, 3000);
        let dest = dir.path().join(format!("backups-{mode}"));
        let out = take(&db, &dest, &[]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let plain = dir.path().join(format!("plain-{mode}.db"));
        gunzip_to(&snapshot_files(&dest)[0], &plain);
        assert_eq!(fs::read(&plain).unwrap(), fs::read(&db).unwrap(), "{mode}");
        assert!(!sidecar(&db, "-wal").exists() && !sidecar(&db, "-shm").exists());
        assert!(!sidecar(&db, "-journal").exists());
    }

    // Committed frames still in the WAL (another connection holds it open) are in the image.
    let db = dir.path().join("wal.db");
    let session = hold_open(&db, "INSERT INTO t(payload) VALUES ('only in the wal');");
    assert!(fs::metadata(sidecar(&db, "-wal")).unwrap().len() > 0);
    let dest = dir.path().join("backups-held");
    let out = take(&db, &dest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = dir.path().join("plain-held.db");
    gunzip_to(&snapshot_files(&dest)[0], &plain);
    assert_eq!(
        sqlite(
            &plain,
            "SELECT count(*) FROM t WHERE payload = 'only in the wal'"
        ),
        "1"
    );
    assert_eq!(sqlite(&plain, "PRAGMA integrity_check"), "ok");
    drop(session);

    let out = take(
        &db,
        &dir.path().join("backups-copy"),
        &["--method", "backup"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot create a temporary directory"),
        "{}",
        stderr(&out)
    );
}

/// A database bigger than the in-memory queue, compressed slowly: pages the compressor has
/// not reached when the read transaction ends go through --tmp-dir, and the snapshot is
/// still the database, byte for byte.
#[test]
fn a_large_snapshot_is_exact_whatever_the_compressor_keeps_up_with() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("big.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE b(x BLOB);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 12000)
         INSERT INTO b SELECT randomblob(3000) FROM c;",
    );
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let dest = dir.path().join("backups");
    let out = snapshot_in(&db, &dest, &tmp, &["--level", "9", "--jobs", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = dir.path().join("plain.db");
    gunzip_to(&snapshot_files(&dest)[0], &plain);
    assert!(fs::metadata(&db).unwrap().len() > 32 << 20);
    assert_eq!(fs::read(&plain).unwrap(), fs::read(&db).unwrap());
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "temporaries left");

    // --tmp-limit 0: the read transaction waits for the compressor instead; no temporary
    // space is needed at all, so a --tmp-dir that cannot hold anything does not matter.
    let not_a_dir = dir.path().join("not-a-dir");
    fs::write(&not_a_dir, "").unwrap();
    let dest2 = dir.path().join("backups2");
    let out = snapshot_in(
        &db,
        &dest2,
        &not_a_dir,
        &["--tmp-limit", "0", "--level", "9", "--jobs", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plain2 = dir.path().join("plain2.db");
    gunzip_to(&snapshot_files(&dest2)[0], &plain2);
    assert_eq!(fs::read(&plain2).unwrap(), fs::read(&db).unwrap());

    let out = sqlbak()
        .args(["snapshot", "--tmp-limit", "lots", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("512MiB"), "{}", stderr(&out));
}

fn sidecar(db: &Path, suffix: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}{suffix}", db.display()))
}

/// A `sqlite3` session that ran `sql` on `db` and keeps the connection open (so its WAL is
/// not checkpointed away) until dropped.
fn hold_open(db: &Path, sql: &str) -> impl Drop {
    use std::io::{BufRead, BufReader, Write};
    struct Session(std::process::Child);
    impl Drop for Session {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 must be installed");
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "PRAGMA wal_autocheckpoint=0;\n{sql}\nSELECT 'ready';"
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(child.stdout.as_mut().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().trim() == "ready"));
    Session(child)
}

#[test]
fn restore_check_levels() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    let dest = dir.path().join("backups");
    make_db(&db, "delete", 2000);
    // A damaged b-tree page inside an intact gzip file: the checksums pass, SQLite must not.
    let mut bytes = fs::read(&db).unwrap();
    let page = 4096 * 4;
    bytes[page..page + 4096].fill(0xAA);
    let mut gz = Vec::new();
    let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &bytes).unwrap();
    enc.finish().unwrap();
    fs::create_dir_all(dest.join("app")).unwrap();
    fs::write(
        dest.join("app").join("app-20240101T000000Z.sqlite3.gz"),
        &gz,
    )
    .unwrap();

    let restore = |check: Option<&str>, out: &Path| {
        let mut cmd = sqlbak();
        cmd.args(["restore", "--dest"])
            .arg(&dest)
            .arg("-o")
            .arg(out);
        if let Some(c) = check {
            cmd.args(["--check", c]);
        }
        cmd.output().unwrap()
    };
    for check in [None, Some("quick"), Some("full")] {
        let target = dir.path().join("r.db");
        let out = restore(check, &target);
        assert_eq!(out.status.code(), Some(1), "{check:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("PRAGMA"), "{}", stderr(&out));
        assert!(!target.exists());
    }
    let target = dir.path().join("unchecked.db");
    let out = restore(Some("none"), &target);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(&target).unwrap(), bytes);
}
