//! Fixtures shared by the integration tests: real database files made with the real
//! `sqlite3` tool, and the real `sqlbak` binary.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A `sqlbak` command with a clean environment (no config from the developer's shell).
pub fn sqlbak() -> Command {
    let mut cmd = Command::cargo_bin("sqlbak").expect("sqlbak binary");
    cmd.env_remove("SQLBAK_CONFIG");
    cmd
}

/// Runs the real sqlite3 CLI on `db` and returns its trimmed stdout; panics with stderr on failure.
pub fn sqlite(db: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 command-line tool must be installed (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {} {sql:?} failed: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes a database in the given journal mode with `rows` rows in table `t` (id, payload)
/// and a matching table `u` written in the same transactions.
pub fn make_db(path: &Path, journal_mode: &str, rows: u32) {
    sqlite(
        path,
        &format!(
            "PRAGMA journal_mode={journal_mode};
             CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
             CREATE TABLE u(id INTEGER PRIMARY KEY, t_id INTEGER NOT NULL);
             BEGIN;
             INSERT INTO t(payload) SELECT printf('row %d %s', value, hex(randomblob(40))) FROM generate_series(1, {rows});
             INSERT INTO u(t_id) SELECT id FROM t;
             COMMIT;"
        ),
    );
}

/// stdout of a finished command as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a finished command as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir`, hidden ones included, relative and sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The snapshot files (`.gz`/`.age`) under a local destination.
pub fn snapshot_files(dest: &Path) -> Vec<PathBuf> {
    files_under(dest)
        .into_iter()
        .filter(|f| !f.split('/').any(|c| c.starts_with('.')))
        .filter(|f| f.ends_with(".gz") || f.ends_with(".age"))
        .map(|f| dest.join(f))
        .collect()
}

/// Decompresses a snapshot with the real gzip tool into `out`.
pub fn gunzip_to(snapshot: &Path, out: &Path) {
    let file = std::fs::File::create(out).unwrap();
    let status = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(snapshot)
        .stdout(file)
        .status()
        .expect("gzip must be installed");
    assert!(status.success(), "gzip -dc {} failed", snapshot.display());
}

/// The JSON a `--json` command printed.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

pub mod s3;

/// Runs `sqlbak snapshot EXTRA... --db DB --dest DEST --tmp-dir TMP` and returns what it
/// did, success or not.
pub fn snapshot_in(db: &Path, dest: &Path, tmp: &Path, extra: &[&str]) -> Output {
    sqlbak()
        .arg("snapshot")
        .args(extra)
        .arg("--db")
        .arg(db)
        .arg("--dest")
        .arg(dest)
        .arg("--tmp-dir")
        .arg(tmp)
        .output()
        .unwrap()
}

/// Runs `sqlbak snapshot --db DB --dest DEST` and asserts it succeeded.
pub fn snapshot(db: &Path, dest: &Path) -> Output {
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(db)
        .arg("--dest")
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot failed: {}", stderr(&out));
    out
}
