//! A reader that stops early (`sqlbak list | head -1`): the commands whose output is their
//! purpose end quietly with status 0; the commands that do work finish it and exit with
//! the status the work earned. Never a panic.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};
use tempfile::TempDir;

/// Runs sqlbak with stdout a pipe whose reading end is closed before sqlbak starts, so
/// the first write fails with EPIPE whatever the timing.
fn with_stdout_closed<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    std::process::Command::new(assert_cmd::cargo::cargo_bin("sqlbak"))
        .env_remove("SQLBAK_CONFIG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run sqlbak")
}

fn assert_no_panic(what: &str, out: &Output) {
    let err = stderr(out);
    assert_ne!(out.status.code(), Some(101), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(!err.contains("Broken pipe"), "{what}: {err}");
}

/// A destination with `count` snapshots of one small database: one real snapshot, moved
/// and copied to hourly times from 2024-01-01T00:00:00Z on.
fn many_snapshots(dir: &Path, count: u32) -> std::path::PathBuf {
    let db = dir.join("app.db");
    let dest = dir.join("backups");
    make_db(&db, "wal", 10);
    snapshot(&db, &dest);
    let taken = snapshot_files(&dest).remove(0);
    let bytes = fs::read(&taken).unwrap();
    fs::remove_file(&taken).unwrap();
    for i in 0..count {
        let (day, hour) = (1 + i / 24, i % 24);
        let name = format!("app-202401{day:02}T{hour:02}0000Z.sqlite3.gz");
        fs::write(dest.join("app").join(name), &bytes).unwrap();
    }
    dest
}

#[test]
fn output_only_commands_end_quietly_with_status_0() {
    let dir = TempDir::new().unwrap();
    let dest = many_snapshots(dir.path(), 300);
    let dest = dest.to_str().unwrap();
    for args in [
        vec!["list", "--dest", dest],
        vec!["list", "--json", "--dest", dest],
        vec!["schedule", "* * * * *", "--count", "100000"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
    ] {
        let out = with_stdout_closed(&args);
        assert_no_panic(&format!("{args:?}"), &out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}: quiet");
    }
}

#[test]
fn working_commands_finish_and_keep_their_status() {
    let dir = TempDir::new().unwrap();
    let dest = many_snapshots(dir.path(), 30);

    // verify: the verdict is the exit status, whoever reads the report.
    for json in [false, true] {
        let mut args = vec!["verify", "--all", "--dest", dest.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = with_stdout_closed(&args);
        assert_no_panic("verify", &out);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let newest = dest.join("app").join("app-20240102T050000Z.sqlite3.gz");
    fs::write(&newest, b"not a snapshot").unwrap();
    let out = with_stdout_closed(["verify", "--dest", dest.to_str().unwrap()]);
    assert_no_panic("verify", &out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 of 1 snapshots failed verification"),
        "{}",
        stderr(&out)
    );

    // prune: deletes everything the policy says, not just what was reported.
    let out = with_stdout_closed([
        "prune",
        "--keep-last",
        "2",
        "--dest",
        dest.to_str().unwrap(),
    ]);
    assert_no_panic("prune", &out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(snapshot_files(&dest).len(), 2);

    // restore: the database is in place.
    fs::remove_file(&newest).unwrap();
    let restored = dir.path().join("restored.db");
    let out = with_stdout_closed(
        ["restore", "--dest", dest.to_str().unwrap(), "-o"]
            .iter()
            .map(OsStr::new)
            .chain([restored.as_os_str()]),
    );
    assert_no_panic("restore", &out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sqlite(&restored, "SELECT count(*) FROM t"), "10");
}
