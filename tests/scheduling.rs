//! `sqlbak schedule`, `sqlbak check` and the `sqlbak run` daemon.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn schedule(args: &[&str]) -> std::process::Output {
    sqlbak().arg("schedule").args(args).output().unwrap()
}

#[test]
fn schedule_prints_crontab_fire_times() {
    // Day-of-month and day-of-week both restricted: either matches (Vixie cron).
    let out = schedule(&["0 0 13 * fri", "--after", "2024-09-01", "--count", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2024-09-06T00:00:00Z\n2024-09-13T00:00:00Z\n2024-09-20T00:00:00Z\n2024-09-27T00:00:00Z\n2024-10-04T00:00:00Z\n"
    );
    let out = schedule(&["@monthly", "--after", "2024-01-31T12:00:00Z", "-n", "2"]);
    assert_eq!(stdout(&out), "2024-02-01T00:00:00Z\n2024-03-01T00:00:00Z\n");
    let out = schedule(&["0 0 29 2 *", "--after", "2024-03-01", "-n", "1"]);
    assert_eq!(stdout(&out), "2028-02-29T00:00:00Z\n");
    // In a time zone, printed with its offset, across the spring-forward gap.
    let out = schedule(&[
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--after",
        "2024-03-09",
        "-n",
        "3",
    ]);
    assert_eq!(
        stdout(&out),
        "2024-03-09T02:30:00-05:00\n2024-03-10T03:00:00-04:00\n2024-03-11T02:30:00-04:00\n"
    );
}

#[test]
fn schedule_errors_name_the_field() {
    for (expr, needle) in [
        ("61 * * * *", "minute field \"61\""),
        ("* * * * * * *", "7 fields"),
        ("0 0 * * funday", "day-of-week field"),
        ("0 0 31 2 *", "never fire"),
        ("", "empty"),
    ] {
        let out = schedule(&[expr]);
        assert_eq!(out.status.code(), Some(2), "{expr:?}");
        assert!(stderr(&out).contains(needle), "{expr:?}: {}", stderr(&out));
    }
    let out = schedule(&["@daily", "--timezone", "Mars/Olympus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("IANA"), "{}", stderr(&out));
}

/// A destination with one snapshot of `app` taken `age` ago (by renaming a real one).
fn dest_with_snapshot_aged(dir: &Path, age: chrono::Duration) -> std::path::PathBuf {
    let dest = dir.join("backups");
    let db = dir.join("app.db");
    make_db(&db, "wal", 5);
    snapshot(&db, &dest);
    let real = snapshot_files(&dest).pop().unwrap();
    let then = chrono::Utc::now() - age;
    fs::rename(
        &real,
        dest.join("app")
            .join(format!("app-{}.sqlite3.gz", then.format("%Y%m%dT%H%M%SZ"))),
    )
    .unwrap();
    dest
}

#[test]
fn check_max_age_pass_and_fail() {
    let dir = TempDir::new().unwrap();
    let dest = dest_with_snapshot_aged(dir.path(), chrono::Duration::hours(30));
    let check = |args: &[&str]| {
        sqlbak()
            .args(["check", "--name", "app", "--dest"])
            .arg(&dest)
            .args(args)
            .output()
            .unwrap()
    };
    let out = check(&["--max-age", "26h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("STALE") && stdout(&out).contains("app"),
        "{}",
        stdout(&out)
    );
    let out = check(&["--max-age", "2days"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "quiet when all is well");
    let out = check(&["--max-age", "26h", "--json"]);
    let v = json(&out);
    assert_eq!(v[0]["status"], "stale");
    assert_eq!(v[0]["ok"], false);
    // An absent database fails too.
    let out = sqlbak()
        .args(["check", "--name", "ghost", "--max-age", "1h", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("MISSING"), "{}", stdout(&out));
    // No --max-age and no schedule: nothing to check against.
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_reports_a_missed_schedule_slot() {
    let dir = TempDir::new().unwrap();
    let dest = dest_with_snapshot_aged(dir.path(), chrono::Duration::minutes(150));
    let config = dir.path().join("sqlbak.toml");
    let write = |schedule: &str| {
        fs::write(
            &config,
            format!(
                "dest = {:?}\n[[databases]]\npath = {:?}\nschedule = {schedule:?}\n",
                dest.display().to_string(),
                dir.path().join("app.db").display().to_string()
            ),
        )
        .unwrap();
    };
    write("0 * * * *");
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v[0]["status"], "missed");
    assert!(v[0]["missed_slot"].as_str().unwrap().ends_with(":00:00Z"));
    write("0 0 1 1 *");
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a yearly schedule has not missed a slot: {}",
        stdout(&out)
    );
}

/// A running `sqlbak run` process, killed on drop if the test did not stop it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(config: &Path) -> Daemon {
    let child = Command::new(assert_cmd::cargo::cargo_bin("sqlbak"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("SQLBAK_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Daemon(child)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(d: &Daemon, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.0.id() as i32), sig).unwrap();
}

fn count_in(dest: &Path, name: &str) -> usize {
    snapshot_files(dest)
        .iter()
        .filter(|p| p.to_str().unwrap().contains(&format!("/{name}/")))
        .count()
}

#[test]
fn daemon_runs_on_schedule_survives_failures_reloads_and_stops_cleanly() {
    let dir = TempDir::new().unwrap();
    let dest = dir.path().join("backups");
    let app = dir.path().join("app.db");
    let other = dir.path().join("other.db");
    make_db(&app, "wal", 50);
    make_db(&other, "delete", 50);
    let config = dir.path().join("sqlbak.toml");
    let write = |extra: &str| {
        fs::write(
            &config,
            format!(
                "dest = {:?}\n[[databases]]\npath = {:?}\nschedule = \"* * * * * *\"\n[[databases]]\npath = \"/nonexistent/missing.db\"\ninterval = \"1s\"\n{extra}",
                dest.display().to_string(),
                app.display().to_string()
            ),
        )
        .unwrap();
    };
    write("");
    let mut daemon = start_daemon(&config);

    // A seconds-level schedule fires repeatedly, although another database fails each time.
    wait_until("three snapshots of app", Duration::from_secs(30), || {
        count_in(&dest, "app") >= 3
    });

    // SIGHUP reloads the config: a new database starts being backed up.
    write(&format!(
        "[[databases]]\npath = {:?}\ninterval = \"1s\"\n",
        other.display().to_string()
    ));
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    wait_until(
        "a snapshot of other after SIGHUP",
        Duration::from_secs(30),
        || count_in(&dest, "other") >= 1,
    );

    // SIGTERM: stop taking work, finish what runs, exit 0, nothing partial left.
    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("missing.db does not exist"),
        "failed runs are logged: {log}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
    let leftovers: Vec<String> = files_under(&dest)
        .into_iter()
        .filter(|f| f.contains("/."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let out = sqlbak()
        .args(["verify", "--all", "--dest"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "every snapshot is whole: {}",
        stdout(&out)
    );
    let after = count_in(&dest, "app");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count_in(&dest, "app"), after, "no snapshots after exit");
}

#[test]
fn daemon_needs_a_schedule() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        "dest = \"/tmp\"\n[[databases]]\npath = \"/a.db\"\n",
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("schedule"), "{}", stderr(&out));
    fs::write(
        &config,
        "dest = \"/tmp\"\n[[databases]]\npath = \"/a.db\"\nschedule = \"99 * * * *\"\n",
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("minute field"), "{}", stderr(&out));
}

/// One database with a local and an offsite destination: both fire together, the daemon
/// runs them one after the other (never two runs on one file at once), and both get done.
#[test]
fn daemon_runs_two_destinations_of_one_database_in_turn() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 2000);
    let local = dir.path().join("local");
    let offsite = dir.path().join("offsite");
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "interval = \"1s\"\n[[databases]]\npath = {db:?}\ndest = {:?}\n[[databases]]\npath = {db:?}\ndest = {:?}\n",
            local.display().to_string(),
            offsite.display().to_string(),
            db = db.display().to_string(),
        ),
    )
    .unwrap();
    let mut daemon = start_daemon(&config);
    wait_until(
        "snapshots in both destinations",
        Duration::from_secs(30),
        || count_in(&local, "app") >= 2 && count_in(&offsite, "app") >= 2,
    );
    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        !log.contains("failed"),
        "no run was turned away by the lock: {log}"
    );
}
