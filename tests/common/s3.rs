//! A real S3-compatible server for the tests, and a proxy that makes it unreliable.
//!
//! [`S3Server`] runs moto's standalone server (`pip install 'moto[server]'`, which
//! `bash .ci/run` does) on a free loopback port, creates a bucket, and kills the server on
//! drop. [`FaultyProxy`] forwards to it from another loopback port, answering some requests
//! with HTTP 500, dropping some connections before or after forwarding them, and cutting
//! some object reads off halfway through the body; with a [`Tamper`] it also refuses chosen
//! requests or alters chosen answers, as a misbehaving server or an altering middlebox would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The bucket every test server starts with.
pub const BUCKET: &str = "sqlbak-test";
/// Dummy credentials: moto accepts any.
pub const ACCESS_KEY: &str = "testing";
/// Dummy credentials: moto accepts any.
pub const SECRET_KEY: &str = "testing";

const INSTALL_HINT: &str = "the S3 tests need moto's S3 server, version 5.2.5 or later: run \
`python3 -m pip install 'moto[server]>=5.2.5'` (bash .ci/run installs it)";

/// Older moto answers CompleteMultipartUpload with the wrong XML root element.
const MOTO_CHECK: &str = "import sys, moto.server, flask, flask_cors
from importlib.metadata import version
v = version('moto')
sys.exit(0 if tuple(int(x) for x in v.split('.')[:3]) >= (5, 2, 5) else 'moto ' + v + ' is too old')";

/// A free TCP port on 127.0.0.1 (nothing listens on it when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// moto's S3 server on 127.0.0.1, killed on drop.
pub struct S3Server {
    child: Child,
    /// Port it listens on.
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Starts a server with an empty bucket [`BUCKET`]; panics with install instructions
    /// when it cannot be started.
    pub fn start() -> S3Server {
        match Command::new("python3").args(["-c", MOTO_CHECK]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("{}{INSTALL_HINT}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => panic!("cannot run python3 ({e}); {INSTALL_HINT}"),
        }
        let log = tempfile::NamedTempFile::new().expect("temporary log file");
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL_HINT}"));
        let mut server = S3Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "moto's server exited ({status}) instead of starting; {INSTALL_HINT}\n{}",
                    std::fs::read_to_string(server.log.path()).unwrap_or_default()
                );
            }
            if try_http(port, "GET", "/", &[]).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto's server did not answer on 127.0.0.1:{port} within 60 s; {INSTALL_HINT}\n{}",
                std::fs::read_to_string(server.log.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, _, body) = http(port, "PUT", &format!("/{BUCKET}"), &[]);
        assert_eq!(
            status,
            200,
            "create bucket: {}",
            String::from_utf8_lossy(&body)
        );
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The destination URL for `prefix` in the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        url_at(self.port, BUCKET, prefix, "")
    }

    /// Object keys in the bucket (the raw listing, every key, first 1000).
    pub fn raw_keys(&self) -> Vec<String> {
        let (status, _, body) = http(self.port, "GET", &format!("/{BUCKET}?list-type=2"), &[]);
        assert_eq!(status, 200);
        xml_values(&String::from_utf8_lossy(&body), "Key")
    }

    /// Upload ids of multipart uploads that are neither completed nor aborted.
    pub fn open_uploads(&self) -> Vec<String> {
        let (status, _, body) = http(self.port, "GET", &format!("/{BUCKET}?uploads"), &[]);
        assert_eq!(status, 200);
        xml_values(&String::from_utf8_lossy(&body), "UploadId")
    }

    /// ETag (without quotes) of each object, from the raw listing.
    pub fn raw_etags(&self) -> Vec<String> {
        let (status, _, body) = http(self.port, "GET", &format!("/{BUCKET}?list-type=2"), &[]);
        assert_eq!(status, 200);
        xml_values(&String::from_utf8_lossy(&body), "ETag")
            .into_iter()
            .map(|e| e.replace("&quot;", "").trim_matches('"').to_string())
            .collect()
    }

    /// The backend itself, on `prefix`, with the dummy credentials.
    pub fn storage(&self, prefix: &str) -> sqlbak::storage::s3::S3Storage {
        sqlbak::storage::s3::S3Storage::with_credentials(&self.url(prefix), ACCESS_KEY, SECRET_KEY)
            .expect("open the S3 backend")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A destination URL for `bucket`/`prefix` at a loopback port, with extra query pairs.
pub fn url_at(port: u16, bucket: &str, prefix: &str, extra: &str) -> String {
    format!("s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{port}&region=us-east-1{extra}")
}

/// A header's value, by lowercase name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

/// The `sqlbak` binary with dummy credentials, and nothing from the developer's AWS set-up:
/// no profile, no shared files, no instance metadata lookups (nothing leaves loopback).
pub fn sqlbak_s3_std() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("sqlbak"));
    cmd.env_remove("SQLBAK_CONFIG");
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    cmd
}

/// [`sqlbak_s3_std`] as an assert_cmd command.
pub fn sqlbak_s3() -> assert_cmd::Command {
    assert_cmd::Command::from_std(sqlbak_s3_std())
}

/// Status, headers (lowercase names) and body of an HTTP answer.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 request on a fresh connection; panics on transport errors.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Answer {
    try_http(port, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port}: {e}"))
}

fn try_http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<Answer> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    let mut reader = BufReader::new(conn);
    let head = read_head(&mut reader)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let status = status_of(&head);
    let headers = headers_of(&head);
    let body = read_body(&mut reader, &headers, method == "HEAD", status)?;
    Ok((status, headers, body))
}

/// Reads up to and including the blank line; `None` on a clean EOF before any byte.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        let blank = line == "\r\n" || line == "\n";
        head.push_str(&line);
        if blank {
            return Ok(Some(head));
        }
    }
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn headers_of(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn read_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
    is_head: bool,
    status: u16,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if is_head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(body);
    }
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        r.take(len).read_to_end(&mut body)?;
    } else if header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// How often (in percent of requests) the proxy misbehaves, and how.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Answer HTTP 500 InternalError without forwarding.
    pub error_500: u32,
    /// Close the connection without forwarding.
    pub drop_before: u32,
    /// Forward, then close the connection instead of relaying the answer.
    pub drop_after: u32,
    /// Forward an object read (a GET of a key), then relay its headers and only the first
    /// half of its body before closing the connection.
    pub cut_object_reads: u32,
    /// Seed of the dice.
    pub seed: u64,
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct FaultStats {
    /// Requests seen.
    pub requests: AtomicU32,
    /// 500s sent.
    pub errors: AtomicU32,
    /// Connections dropped before forwarding.
    pub dropped_before: AtomicU32,
    /// Connections dropped after forwarding.
    pub dropped_after: AtomicU32,
    /// Object reads cut off halfway through the body.
    pub cut: AtomicU32,
    /// The head (request line and headers) of every request seen.
    pub heads: Mutex<Vec<String>>,
}

impl FaultStats {
    /// Faults injected so far.
    pub fn faults(&self) -> u32 {
        self.errors.load(Ordering::Relaxed)
            + self.dropped_before.load(Ordering::Relaxed)
            + self.dropped_after.load(Ordering::Relaxed)
            + self.cut.load(Ordering::Relaxed)
    }
}

/// Decides from a request's head (request line and headers) whether the proxy answers it
/// itself instead of forwarding it: `Some((status, S3 error code))`.
pub type Refuse = dyn Fn(&str) -> Option<(u16, &'static str)> + Send + Sync;

/// Edits the head (status line and headers) of the server's answer to the request whose
/// head comes first, before the proxy relays it.
pub type Alter = dyn Fn(&str, &mut String) + Send + Sync;

/// Deliberate, targeted misbehaviour of a [`FaultyProxy`], on top of its random faults.
#[derive(Clone, Default)]
pub struct Tamper {
    /// Requests answered with an error without reaching the server.
    pub refuse: Option<Arc<Refuse>>,
    /// Answers altered on the way back.
    pub alter: Option<Arc<Alter>>,
}

/// Replaces the value of header `name` (any case) in an answer's head; adds the header
/// when it is missing.
pub fn set_header(head: &mut String, name: &str, value: &str) {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&prefix))
        .map(str::to_string)
        .collect();
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    lines.insert(blank, format!("{name}: {value}"));
    *head = lines.join("\r\n");
}

/// A fault-injecting HTTP proxy on 127.0.0.1 in front of `upstream`; stopped on drop.
pub struct FaultyProxy {
    /// Port it listens on.
    pub port: u16,
    /// What it did.
    pub stats: Arc<FaultStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyProxy {
    /// Starts forwarding to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16, faults: Faults) -> FaultyProxy {
        Self::start_tampering(upstream, faults, Tamper::default())
    }

    /// Starts forwarding to 127.0.0.1:`upstream`, refusing and altering as `tamper` says.
    pub fn start_tampering(upstream: u16, faults: Faults, tamper: Tamper) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stats = Arc::new(FaultStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let dice = Arc::new(Mutex::new(faults.seed.max(1)));
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (stats, dice) = (stats.clone(), dice.clone());
                            let tamper = tamper.clone();
                            std::thread::spawn(move || {
                                let _ = serve(conn, upstream, faults, &tamper, &stats, &dice);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        FaultyProxy {
            port,
            stats,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn roll(dice: &Mutex<u64>) -> u32 {
    let mut x = dice.lock().unwrap();
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x % 100) as u32
}

/// Handles one request on `conn`, then closes it.
fn serve(
    conn: TcpStream,
    upstream: u16,
    faults: Faults,
    tamper: &Tamper,
    stats: &FaultStats,
    dice: &Mutex<u64>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut client = BufReader::new(conn.try_clone()?);
    let Some(head) = read_head(&mut client)? else {
        return Ok(());
    };
    let headers = headers_of(&head);
    let len: u64 = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    (&mut client).take(len).read_to_end(&mut body)?;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.heads.lock().unwrap().push(head.clone());
    let method = head.split_whitespace().next().unwrap_or("").to_string();
    // Path-style `/bucket/key`: an object read names a key; a listing names only the bucket.
    let names_a_key = head
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split('?').next())
        .and_then(|path| path.trim_start_matches('/').split_once('/'))
        .is_some_and(|(_, key)| !key.is_empty());
    let mut out = conn;
    if let Some((status, code)) = tamper.refuse.as_ref().and_then(|refuse| refuse(&head)) {
        return answer_error(out, status, code);
    }
    let r = roll(dice);
    if r < faults.error_500 {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return answer_error(out, 500, "InternalError");
    }
    if r < faults.error_500 + faults.drop_before {
        stats.dropped_before.fetch_add(1, Ordering::Relaxed);
        return out.shutdown(Shutdown::Both);
    }
    let drop_after = r < faults.error_500 + faults.drop_before + faults.drop_after;
    let cut = !drop_after
        && method == "GET"
        && names_a_key
        && r < faults.error_500 + faults.drop_before + faults.drop_after + faults.cut_object_reads;
    // Forward on a fresh connection that closes after the answer.
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut forwarded = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        if line.is_empty() {
            break;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    up.write_all(forwarded.as_bytes())?;
    up.write_all(&body)?;
    let mut reader = BufReader::new(up);
    let Some(mut rhead) = read_head(&mut reader)? else {
        return out.shutdown(Shutdown::Both);
    };
    let rheaders = headers_of(&rhead);
    let rbody = read_body(&mut reader, &rheaders, method == "HEAD", status_of(&rhead))?;
    if drop_after {
        stats.dropped_after.fetch_add(1, Ordering::Relaxed);
        return out.shutdown(Shutdown::Both);
    }
    if let Some(alter) = &tamper.alter {
        alter(&head, &mut rhead);
    }
    // The body was read whole (and de-chunked), so it is relayed with its length; a HEAD
    // answer keeps the length of the object it describes.
    let mut relayed = String::new();
    for line in rhead.split("\r\n") {
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        let framing =
            lower.starts_with("content-length:") || lower.starts_with("transfer-encoding:");
        if lower.starts_with("connection:") || (framing && method != "HEAD") {
            continue;
        }
        relayed.push_str(line);
        relayed.push_str("\r\n");
    }
    if method != "HEAD" {
        relayed.push_str(&format!("Content-Length: {}\r\n", rbody.len()));
    }
    relayed.push_str("Connection: close\r\n\r\n");
    out.write_all(relayed.as_bytes())?;
    if cut {
        stats.cut.fetch_add(1, Ordering::Relaxed);
        out.write_all(&rbody[..rbody.len() / 2])?;
        out.flush()?;
        return out.shutdown(Shutdown::Both);
    }
    out.write_all(&rbody)?;
    out.flush()?;
    out.shutdown(Shutdown::Both)
}

/// Answers an S3-style XML error without forwarding, then closes the connection.
fn answer_error(mut out: TcpStream, status: u16, code: &str) -> std::io::Result<()> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
<Message>injected by the test proxy</Message></Error>"
    );
    write!(
        out,
        "HTTP/1.1 {status} {code}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    )?;
    out.shutdown(Shutdown::Both)
}
