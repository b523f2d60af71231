//! Temporaries of runs that died are removed by the next run, and only those: a tag names
//! its writer by host, pid and the pid's start time, so a reused pid (pid 1 in every
//! container run) does not keep a dead run's temporary alive, and a live run's temporary
//! is never touched.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
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

/// What `/proc` says about this machine, read here independently of sqlbak.
struct Proc {
    host: String,
    boot: String,
}

impl Proc {
    fn read() -> Proc {
        let raw = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .expect("these tests need Linux's /proc");
        Proc {
            host: sqlbak::host::hostname(),
            boot: raw.trim().replace('-', "")[..8].to_string(),
        }
    }

    /// Field 22 of /proc/<pid>/stat: the start time in clock ticks after boot.
    fn start_of(pid: u32) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_comm = stat.rsplit_once(')').unwrap().1;
        after_comm
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A tag naming `pid` on this host as started at `ticks`, with random part `rand`.
    fn tag(&self, pid: u32, ticks: u64, rand: &str) -> String {
        format!("{}-{pid}.{ticks}.{}-{rand}", self.host, self.boot)
    }
}

/// A process that stays alive until dropped.
fn sleeper() -> Reaper {
    Reaper(Command::new("sleep").arg("600").spawn().unwrap())
}

#[test]
fn snapshot_sweeps_temporaries_of_a_reused_pid_and_keeps_live_ones() {
    let p = Proc::read();
    let init = Proc::start_of(1);
    let live = sleeper();
    let live_pid = live.0.id();
    let live_start = Proc::start_of(live_pid);

    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 100);
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let dest = dir.path().join("backups");
    let name_dir = dest.join("app");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&name_dir)
        .unwrap();

    let capture = |tag: &str| {
        let d = tmp.join(format!("sqlbak-capture-{tag}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("image.sqlite3"), b"partial").unwrap();
        d
    };
    let upload = |tag: &str| {
        let f = name_dir.join(format!(".app-20200101T000000Z.sqlite3.gz.tmp-{tag}"));
        fs::write(&f, b"partial").unwrap();
        f
    };
    // Pid 1, as a crashed run in a container was, but pid 1 is now another process.
    let swept = [
        capture(&p.tag(1, init + 1, "Reuse1")),
        upload(&p.tag(1, init + 1, "Reuse2")),
        // A live pid that started at another time than the run that wrote this.
        capture(&p.tag(live_pid, live_start + 1, "Reuse3")),
        // Written before the last reboot.
        capture(&format!("{}-1.{init}.00000000-Boot01", p.host)),
        // Old-style tag (no start time) of a dead pid: the old rule.
        upload(&format!("{}-2147483000-Old001", p.host)),
    ];
    let kept = [
        // Live processes with their true start times.
        capture(&p.tag(1, init, "Live01")),
        upload(&p.tag(1, init, "Live02")),
        capture(&p.tag(live_pid, live_start, "Live03")),
        upload(&p.tag(live_pid, live_start, "Live04")),
        // Old-style tag of a live pid: the old rule keeps it.
        capture(&format!("{}-1-Old002", p.host)),
        // Not exactly our shape: a 7-character random part, another prefix, no tag.
        capture(&p.tag(1, init + 1, "Foreign")),
        capture(&format!("sqlbak-capturex{}", p.tag(1, init + 1, "Other1"))),
        upload("junk"),
    ];

    let out = snapshot_in(&db, &dest, &tmp, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for path in &swept {
        assert!(!path.exists(), "not swept: {}", path.display());
    }
    for path in &kept {
        assert!(
            path.exists(),
            "swept, but should be kept: {}",
            path.display()
        );
    }
    assert_eq!(snapshot_files(&dest).len(), 1);
    // The run's own temporaries are gone, and nothing else appeared.
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 5);
    assert_eq!(fs::read_dir(&name_dir).unwrap().count(), 4);
}

/// Starts `cmd`, waits until a file named `prefix…` appears in `dir`, then stops the
/// process (so it cannot finish in between), checks the file is still there and kills it
/// with SIGKILL. Returns the file, or `None` when the run finished before it was stopped.
fn kill_midway(cmd: &mut Command, dir: &Path, prefix: &str) -> Option<PathBuf> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut child = Reaper(cmd.spawn().unwrap());
    let pid = Pid::from_raw(child.0.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(60);
    let temp = loop {
        let found = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            });
        if let Some(path) = found {
            break path;
        }
        if child.0.try_wait().unwrap().is_some() {
            return None;
        }
        assert!(Instant::now() < deadline, "no temporary {prefix}… appeared");
        std::thread::sleep(Duration::from_millis(1));
    };
    kill(pid, Signal::SIGSTOP).unwrap();
    let caught = temp.exists();
    kill(pid, Signal::SIGKILL).unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    caught.then_some(temp)
}

/// A database of 64 MiB of random blobs, snapshotted to `dest`: large enough that restoring
/// it takes a while.
fn big_snapshot(dir: &Path) -> PathBuf {
    let db = dir.join("big.db");
    sqlite(
        &db,
        "CREATE TABLE t(b BLOB); INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 16384);",
    );
    let dest = dir.join("backups");
    snapshot(&db, &dest);
    dest
}

#[test]
fn restore_killed_midway_is_cleaned_up_by_the_next_restore() {
    let p = Proc::read();
    let init = Proc::start_of(1);
    let dir = TempDir::new().unwrap();
    let dest = big_snapshot(dir.path());
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("r.db");
    let restore = || {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("sqlbak"));
        cmd.env_remove("SQLBAK_CONFIG")
            .args(["restore", "-q", "--dest"])
            .arg(&dest)
            .arg("-o")
            .arg(&output);
        cmd
    };

    let killed = (0..5)
        .find_map(|_| {
            let _ = fs::remove_file(&output);
            kill_midway(&mut restore(), &out_dir, ".r.db.sqlbak-restore-")
        })
        .expect("restore always finished before it could be stopped");
    assert!(!output.exists(), "a killed restore installs nothing");
    let name = killed.file_name().unwrap().to_str().unwrap().to_string();
    let tag = name.strip_prefix(".r.db.sqlbak-restore-").unwrap();
    assert!(
        tag.starts_with(&format!("{}-", p.host)) && tag.contains(&format!(".{}-", p.boot)),
        "the temporary names its owner: {name}"
    );

    // Beside it: a live process's restore into the same file, and a dead one's into another.
    let live = out_dir.join(format!(".r.db.sqlbak-restore-{}", p.tag(1, init, "Live01")));
    let other = out_dir.join(format!(
        ".other.db.sqlbak-restore-{}",
        p.tag(1, init + 1, "Dead01")
    ));
    fs::write(&live, b"in progress").unwrap();
    fs::write(&other, b"partial").unwrap();

    let out = restore().output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !killed.exists(),
        "the killed restore's temporary is removed"
    );
    assert!(live.exists(), "a live restore's temporary is kept");
    assert!(other.exists(), "only temporaries of this output are swept");
    assert_eq!(sqlite(&output, "SELECT count(*) FROM t"), "16384");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 3);
}

#[test]
fn verify_killed_midway_is_cleaned_up_by_the_next_verify() {
    let p = Proc::read();
    let init = Proc::start_of(1);
    let dir = TempDir::new().unwrap();
    let dest = big_snapshot(dir.path());
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let verify = || {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("sqlbak"));
        cmd.env_remove("SQLBAK_CONFIG")
            .args(["verify", "--dest"])
            .arg(&dest)
            .arg("--tmp-dir")
            .arg(&tmp)
            .stdout(std::process::Stdio::null());
        cmd
    };
    let killed = (0..5)
        .find_map(|_| kill_midway(&mut verify(), &tmp, "sqlbak-verify-"))
        .expect("verify always finished before it could be stopped");
    let live = tmp.join(format!("sqlbak-verify-{}", p.tag(1, init, "Live01")));
    let unnamed = tmp.join("sqlbak-verify-Ab3dE9"); // older versions: no owner, kept
    fs::write(&live, b"in progress").unwrap();
    fs::write(&unnamed, b"partial").unwrap();

    let out = verify().output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!killed.exists(), "the killed verify's temporary is removed");
    assert!(live.exists() && unnamed.exists());
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 2);
}
