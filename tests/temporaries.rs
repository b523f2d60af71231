//! Temporaries of runs that died are removed by the next run, and only those: a tag names
//! its writer by host, pid and the pid's start time, so a reused pid (pid 1 in every
//! container run) does not keep a dead run's temporary alive, and a live run's temporary
//! is never touched.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::process::{Child, Command};
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

    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--tmp-dir")
        .arg(&tmp)
        .output()
        .unwrap();
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
