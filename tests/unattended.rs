//! Running unattended: the per-database lock, hooks, pings to a local HTTP server and the
//! metrics file, all through the real binary.

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

#[test]
fn a_locked_database_exits_4_without_hooks_pings_or_metrics() {
    let (dir, db, dest) = setup();
    let other = dir.path().join("other.db");
    make_db(&other, "delete", 10);
    let hook_out = dir.path().join("hook-ran");
    let metrics = dir.path().join("sqlbak.prom");
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\nmetrics_file = {:?}\non_failure = \"touch '{}'\"\n\
             [[databases]]\npath = {:?}\n[[databases]]\npath = {:?}\n",
            dest.display().to_string(),
            metrics.display().to_string(),
            hook_out.display(),
            db.display().to_string(),
            other.display().to_string(),
        ),
    )
    .unwrap();
    // Hold both databases' locks the way another run would.
    let hold = |db: &Path| {
        let lock = db.with_file_name(format!(
            ".{}.sqlbak-lock",
            db.file_name().unwrap().to_str().unwrap()
        ));
        let f = fs::File::create(lock).unwrap();
        Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap()
    };
    let held = (hold(&db), hold(&other));
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("holds the lock on") && err.contains("2 of 2 databases were locked"),
        "{err}"
    );
    assert!(!hook_out.exists(), "contention is not a failure to report");
    assert!(!metrics.exists());

    // With one lock released that database is snapshotted; the other is still held, so the
    // run still exits 4.
    drop(held.1);
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(snapshot_files(&dest).len(), 1);
    drop(held.0);
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
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
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
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

// ---------------------------------------------------------------------------------------
// Metrics

/// The metrics text with every timestamp checked to lie within `range` and replaced by
/// `T`, and every duration checked to be plausible and replaced by `D`.
fn normalized(text: &str, range: (i64, i64)) -> String {
    text.lines()
        .map(|line| {
            let Some((series, value)) = line.rsplit_once(' ') else {
                return line.to_string();
            };
            if line.starts_with('#') {
                line.to_string()
            } else if series.contains("_timestamp_seconds") && value != "0" {
                let t: i64 = value.parse().unwrap();
                assert!(range.0 <= t && t <= range.1, "{line}");
                format!("{series} T")
            } else if series.starts_with("sqlbak_last_duration_seconds") {
                let d: f64 = value.parse().unwrap();
                assert!((0.0..60.0).contains(&d), "{line}");
                format!("{series} D")
            } else {
                line.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn metrics_file_tracks_every_database_across_runs() {
    let (dir, db, dest) = setup();
    let other = dir.path().join("other.db");
    make_db(&other, "delete", 10);
    let metrics = dir.path().join("textfile").join("sqlbak.prom");
    fs::create_dir(metrics.parent().unwrap()).unwrap();
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\nmetrics_file = {:?}\n[[databases]]\npath = {:?}\n[[databases]]\npath = {:?}\n",
            dest.display().to_string(),
            metrics.display().to_string(),
            db.display().to_string(),
            other.display().to_string(),
        ),
    )
    .unwrap();
    let t0 = now();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sizes: Vec<u64> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["size"].as_u64().unwrap())
        .collect();
    let text = fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        normalized(&text, (t0, now())),
        format!(
            "\
# HELP sqlbak_last_success_timestamp_seconds Unix time of the last successful snapshot (0: none since a failure was recorded).
# TYPE sqlbak_last_success_timestamp_seconds gauge
sqlbak_last_success_timestamp_seconds{{name=\"app\"}} T
sqlbak_last_success_timestamp_seconds{{name=\"other\"}} T
# HELP sqlbak_last_run_timestamp_seconds Unix time the last snapshot run finished, successful or not.
# TYPE sqlbak_last_run_timestamp_seconds gauge
sqlbak_last_run_timestamp_seconds{{name=\"app\"}} T
sqlbak_last_run_timestamp_seconds{{name=\"other\"}} T
# HELP sqlbak_last_duration_seconds Seconds the last successful snapshot (and prune) took.
# TYPE sqlbak_last_duration_seconds gauge
sqlbak_last_duration_seconds{{name=\"app\"}} D
sqlbak_last_duration_seconds{{name=\"other\"}} D
# HELP sqlbak_last_size_bytes Bytes stored by the last successful snapshot (compressed, encrypted if so).
# TYPE sqlbak_last_size_bytes gauge
sqlbak_last_size_bytes{{name=\"app\"}} {}
sqlbak_last_size_bytes{{name=\"other\"}} {}
# HELP sqlbak_failures_total Failed snapshot runs.
# TYPE sqlbak_failures_total counter
sqlbak_failures_total{{name=\"app\"}} 0
sqlbak_failures_total{{name=\"other\"}} 0
",
            sizes[0], sizes[1]
        )
    );
    let before: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| l.contains("name=\"app\""))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();

    // The other database breaks: only its failure counter and run time move.
    fs::write(&other, "no longer a database").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--name", "other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text2 = fs::read_to_string(&metrics).unwrap();
    let after: BTreeMap<&str, &str> = text2
        .lines()
        .filter(|l| l.contains("name=\"app\""))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    assert_eq!(before, after, "app's series are kept as they were");
    let value = |series: &str| {
        text2
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{series} missing from\n{text2}"))
    };
    assert_eq!(value("sqlbak_failures_total{name=\"other\"}"), "1");
    assert_eq!(
        value("sqlbak_last_size_bytes{name=\"other\"}"),
        sizes[1].to_string()
    );
    let last_success: i64 = value("sqlbak_last_success_timestamp_seconds{name=\"other\"}")
        .parse()
        .unwrap();
    let last_run: i64 = value("sqlbak_last_run_timestamp_seconds{name=\"other\"}")
        .parse()
        .unwrap();
    assert!(last_run > last_success, "{text2}");
    // Only the file and its lock are in the directory: no temporaries.
    let mut names: Vec<String> = fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".sqlbak.prom.lock", "sqlbak.prom"]);
}

#[test]
fn an_unwritable_metrics_file_is_a_warning() {
    let (dir, db, dest) = setup();
    let out = sqlbak()
        .args(["snapshot", "--db"])
        .arg(&db)
        .arg("--dest")
        .arg(&dest)
        .arg("--metrics-file")
        .arg(dir.path().join("no-such-dir").join("sqlbak.prom"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("cannot update the metrics file"), "{err}");
    assert_eq!(snapshot_files(&dest).len(), 1);
}
