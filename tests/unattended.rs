//! Running unattended: the per-database lock, hooks and pings to a local HTTP server,
//! through the real binary.

mod common;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

// ---------------------------------------------------------------------------------------
// Pings

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// A tiny HTTP server on 127.0.0.1 that records every request; `status` picks the answer
/// for a path. Stopped and joined when dropped.
struct PingServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PingServer {
    fn start(status: fn(&str) -> u16) -> PingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Some(req) = serve(stream, status) {
                    reqs.lock().unwrap().push(req);
                }
            }
        });
        PingServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for PingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, status: fn(&str) -> u16) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let code = status(&path);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
    );
    Some(Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `sqlbak` without proxy settings from the environment, so pings go straight to
/// 127.0.0.1.
fn sqlbak_direct() -> assert_cmd::Command {
    let mut cmd = sqlbak();
    for var in [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn pings_report_start_and_success_or_failure() {
    let server = PingServer::start(|_| 200);
    let (dir, db, dest) = setup();
    let out = sqlbak_direct()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--ping-url")
        .arg(server.url("/ping/abc"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let reqs = server.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ping/abc/start", "/ping/abc"]);
    assert!(reqs.iter().all(|r| r.method == "POST"));
    assert!(reqs[1].body.contains("app/app-"), "{:?}", reqs[1]);

    let bad = dir.path().join("bad.db");
    fs::write(&bad, "not a database").unwrap();
    let out = sqlbak_direct()
        .args(["snapshot", "--db"])
        .arg(&bad)
        .arg("--dest")
        .arg(&dest)
        .arg("--ping-url")
        .arg(server.url("/ping/abc/"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let reqs = server.requests();
    let paths: Vec<&str> = reqs[2..].iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ping/abc/start", "/ping/abc/fail"]);
    assert!(
        reqs[3].body.contains("is not a SQLite database") && reqs[3].body.contains("bad.db"),
        "{:?}",
        reqs[3]
    );
}

#[test]
fn ping_trouble_is_a_warning_not_a_failure() {
    // The success ping keeps failing with 503: retried, then given up with a warning.
    let server = PingServer::start(|path| if path.ends_with("/start") { 200 } else { 503 });
    let (_dir, db, dest) = setup();
    let out = sqlbak_direct()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--ping-url")
        .arg(server.url("/p/secret-uuid"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("success ping") && err.contains("503"), "{err}");
    assert!(
        !err.contains("secret-uuid"),
        "the ping path is not logged: {err}"
    );
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/p/secret-uuid/start",
            "/p/secret-uuid",
            "/p/secret-uuid",
            "/p/secret-uuid"
        ]
    );

    // Nobody listening at all.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = sqlbak_direct()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--ping-url")
        .arg(format!("http://127.0.0.1:{port}/p"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("start ping") && err.contains("success ping"),
        "{err}"
    );
}

#[test]
fn a_malformed_ping_url_is_a_usage_error() {
    let (_dir, db, dest) = setup();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .args(["--ping-url", "hc-ping.com/uuid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
    assert!(snapshot_files(&dest).is_empty());
}
