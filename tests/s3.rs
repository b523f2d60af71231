//! Every command on an `s3://` destination, through the real binary, against a real
//! S3-compatible server (moto) on 127.0.0.1, with and without injected faults.

mod common;

use common::s3::*;
use common::*;
use sqlbak::storage::s3::S3Storage;
use sqlbak::storage::{ObjectMeta, Storage};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn run(args: &[&str]) -> Output {
    sqlbak_s3().args(args).output().unwrap()
}

fn snapshot(db: &Path, dest: &str) -> Output {
    let out = sqlbak_s3()
        .args(["snapshot", "--json", "--db"])
        .arg(db)
        .args(["--dest", dest])
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot failed: {}", stderr(&out));
    out
}

fn restore(dest: &str, at: Option<&str>, output: &Path) -> Output {
    let mut cmd = sqlbak_s3();
    cmd.args(["restore", "--name", "app", "--dest", dest, "-o"])
        .arg(output);
    if let Some(at) = at {
        cmd.args(["--at", at]);
    }
    cmd.output().unwrap()
}

/// A database of `mib` MiB of random (incompressible) blobs.
fn random_db(path: &Path, mib: u32) {
    sqlite(
        path,
        &format!(
            "CREATE TABLE t(b BLOB); INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, {});",
            mib * 256
        ),
    );
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    sqlbak::codec::hex(&sha2::Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn round_trip_list_restore_verify() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 3000);
    let before = sqlite(&db, "SELECT count(*), sum(length(payload)) FROM t");
    let dest = server.url("prod/eu");

    let taken = json(&snapshot(&db, &dest));
    let key = taken[0]["key"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("app/app-") && key.ends_with("Z.sqlite3.gz"),
        "{key}"
    );
    assert_eq!(taken[0]["dest"], "s3://sqlbak-test/prod/eu");

    // Stored under the prefix, as plain gzip, with the image's size as metadata (its sha256
    // rides in the trailer: hashing it up front would cost a read of the whole image).
    assert_eq!(server.raw_keys(), [format!("prod/eu/{key}")]);
    let store = server.storage("prod/eu");
    let recorded = store.image_meta(&key).unwrap().expect("metadata");
    assert_eq!(recorded.image_sha256, None);
    assert_eq!(
        recorded.image_size,
        taken[0]["image_size"].as_u64().unwrap()
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut store.open(&key).unwrap(), &mut bytes).unwrap();
    let gz = dir.path().join("plain.gz");
    fs::write(&gz, bytes).unwrap();
    let plain = dir.path().join("plain.db");
    gunzip_to(&gz, &plain);
    assert_eq!(sqlite(&plain, "PRAGMA integrity_check"), "ok");

    let listed = json(&run(&["list", "--json", "--dest", &dest]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["key"], key.as_str());
    assert_eq!(listed[0]["name"], "app");
    assert_eq!(listed[0]["size"], taken[0]["size"]);
    let table = stdout(&run(&["list", "--dest", &dest]));
    assert!(
        table.contains("app") && table.lines().count() == 2,
        "{table}"
    );

    let restored = dir.path().join("restored.db");
    let out = restore(&dest, None, &restored);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&key), "{}", stdout(&out));
    assert_eq!(sqlite(&restored, "PRAGMA integrity_check"), "ok");
    assert_eq!(
        sqlite(&restored, "SELECT count(*), sum(length(payload)) FROM t"),
        before
    );
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&plain).unwrap());

    let out = run(&["verify", "--json", "--dest", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)[0]["ok"], true);

    // The URL's own prefix does not leak: the bucket root holds prod/, not snapshots.
    let root = json(&run(&["list", "--json", "--dest", &server.url("")]));
    assert_eq!(root, serde_json::json!([]));
}

#[test]
fn multipart_snapshot_round_trips() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    random_db(&db, 13);
    let dest = format!("{}&part_size=5MiB", server.url("mp"));
    let taken = json(&snapshot(&db, &dest));
    assert!(taken[0]["size"].as_u64().unwrap() > 10 << 20, "{taken}");

    // Three parts of at most 5 MiB: the multipart ETag says how many.
    let etags = server.raw_etags();
    assert!(
        etags.len() == 1 && etags[0].ends_with("-3"),
        "ETags {etags:?}"
    );
    assert_eq!(server.open_uploads(), Vec::<String>::new());

    let restored = dir.path().join("restored.db");
    let out = restore(&dest, None, &restored);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_hex(&restored), taken[0]["sha256"].as_str().unwrap());
    assert_eq!(sqlite(&restored, "PRAGMA integrity_check"), "ok");
}

#[test]
fn more_than_a_thousand_snapshots_are_listed() {
    let server = S3Server::start();
    let url = server.url("many");
    let store = server.storage("many");
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let keys: Vec<String> = (0..1050)
        .map(|i| {
            sqlbak::catalog::SnapshotKey::new("app", start + chrono::Duration::hours(i), false)
                .key()
        })
        .collect();
    std::thread::scope(|s| {
        for chunk in keys.chunks(keys.len().div_ceil(4)) {
            let store = &store;
            s.spawn(move || {
                for key in chunk {
                    let mut w = store.create(key, &ObjectMeta::default()).unwrap();
                    w.write_all(b"not read by list").unwrap();
                    w.commit().unwrap();
                }
            });
        }
    });
    let listed = json(&run(&["list", "--json", "--name", "app", "--dest", &url]));
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(listed, keys, "every page, oldest first");

    // Batched deletes (1000 a request) remove them all.
    let failed = store.delete(&keys);
    assert!(failed.is_empty(), "{failed:?}");
    assert!(store.list("").unwrap().is_empty());
}

/// Stores one real snapshot per stamp, each with a marker row, under keys with those times.
fn timeline(dir: &Path, store: &S3Storage, stamps: &[&str]) {
    let db = dir.join("app.db");
    let local = dir.join("local");
    make_db(&db, "wal", 5);
    sqlite(&db, "CREATE TABLE marker(stamp TEXT)");
    for stamp in stamps {
        sqlite(
            &db,
            &format!("DELETE FROM marker; INSERT INTO marker VALUES ('{stamp}')"),
        );
        let _ = fs::remove_dir_all(&local);
        let out = sqlbak()
            .args(["snapshot", "--db"])
            .arg(&db)
            .arg("--dest")
            .arg(&local)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let file = &snapshot_files(&local)[0];
        let bytes = fs::read(file).unwrap();
        let report = sqlbak::codec::decompress(&bytes[..], std::io::sink(), 1, &|_| {}).unwrap();
        let meta = ObjectMeta {
            image_size: report.size,
            image_sha256: Some(report.sha256),
        };
        let mut w = store
            .create(&format!("app/app-{stamp}.sqlite3.gz"), &meta)
            .unwrap();
        w.write_all(&bytes).unwrap();
        w.commit().unwrap();
    }
}

#[test]
fn restore_by_time_and_metadata_checks() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let url = server.url("t");
    let store = server.storage("t");
    timeline(
        dir.path(),
        &store,
        &["20240101T000000Z", "20240101T120000Z", "20240105T083000Z"],
    );
    for (i, (at, want)) in [
        (Some("2024-01-01T11:59:59Z"), "20240101T000000Z"),
        (Some("2024-01-01T14:00:00+02:00"), "20240101T120000Z"),
        (Some("2024-01-04"), "20240101T120000Z"),
        (None, "20240105T083000Z"),
    ]
    .iter()
    .enumerate()
    {
        let out_path = dir.path().join(format!("r{i}.db"));
        let out = restore(&url, *at, &out_path);
        assert!(out.status.success(), "--at {at:?}: {}", stderr(&out));
        assert_eq!(sqlite(&out_path, "SELECT stamp FROM marker"), *want);
    }
    let out_path = dir.path().join("none.db");
    let out = restore(&url, Some("2023-12-31"), &out_path);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!out_path.exists());

    // A snapshot whose metadata disagrees with its content is refused by restore and verify.
    let good = store.open("app/app-20240101T000000Z.sqlite3.gz").unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut { good }, &mut bytes).unwrap();
    let lie = ObjectMeta {
        image_size: 4096,
        image_sha256: Some("0".repeat(64)),
    };
    let mut w = store
        .create("app/app-20240106T000000Z.sqlite3.gz", &lie)
        .unwrap();
    w.write_all(&bytes).unwrap();
    w.commit().unwrap();
    let out = restore(&url, None, &out_path);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("metadata records 4096 bytes with sha256 0000"),
        "{}",
        stderr(&out)
    );
    assert!(!out_path.exists());
    let out = run(&["verify", "--dest", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));
}

#[test]
fn faults_are_retried_or_fail_cleanly() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let proxy = FaultyProxy::start(
        server.port,
        Faults {
            error_500: 10,
            drop_before: 5,
            drop_after: 5,
            cut_object_reads: 0,
            seed: 0x5eed,
        },
    );
    let via_proxy = |prefix: &str| url_at(proxy.port, BUCKET, prefix, "&part_size=5MiB");
    let small = dir.path().join("app.db");
    make_db(&small, "wal", 2000);
    let big = dir.path().join("big.db");
    random_db(&big, 12);

    for (db, prefix) in [(&small, "small"), (&big, "big")] {
        for round in 0..3 {
            let out = sqlbak_s3()
                .args(["snapshot", "--json", "--name", "app", "--db"])
                .arg(db)
                .args(["--dest", &via_proxy(prefix)])
                .output()
                .unwrap();
            let direct = server.url(prefix);
            let listed = json(&run(&["list", "--json", "--dest", &direct]));
            if out.status.success() {
                // Correct despite the faults: restore (also through the proxy) and compare.
                let sha = json(&out)[0]["sha256"].as_str().unwrap().to_string();
                let restored = dir.path().join(format!("{prefix}-{round}.db"));
                let mut res = restore(&via_proxy(prefix), None, &restored);
                if !res.status.success() {
                    res = restore(&direct, None, &restored);
                }
                assert!(res.status.success(), "{}", stderr(&res));
                assert_eq!(sha256_hex(&restored), sha);
                assert_eq!(listed.as_array().unwrap().len(), round + 1, "{listed}");
            } else {
                // Failed cleanly: an error naming the cause, and nothing new listed.
                assert_eq!(out.status.code(), Some(1));
                assert!(stderr(&out).contains("error: "), "{}", stderr(&out));
                assert!(listed.as_array().unwrap().len() <= round, "{listed}");
            }
        }
    }
    // What went over the wire: every upload carries Content-MD5, and none uses the
    // checksum trailers (aws-chunked) that several S3-compatible stores reject.
    let heads = proxy.stats.heads.lock().unwrap().clone();
    let uploads: Vec<&String> = heads
        .iter()
        .filter(|h| h.starts_with("PUT /sqlbak-test/"))
        .collect();
    assert!(uploads.len() >= 6, "{heads:#?}");
    for head in uploads {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\ncontent-md5: "), "{head}");
        assert!(
            !lower.contains("aws-chunked") && !lower.contains("x-amz-trailer"),
            "{head}"
        );
    }
    assert!(
        heads
            .iter()
            .any(|h| h.contains("If-None-Match: *") || h.contains("if-none-match: *")),
        "conditional writes are used"
    );
    eprintln!(
        "fault proxy: {} requests, {} answered 500, {} dropped before and {} after forwarding",
        proxy
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        proxy
            .stats
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        proxy
            .stats
            .dropped_before
            .load(std::sync::atomic::Ordering::Relaxed),
        proxy
            .stats
            .dropped_after
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        proxy.stats.faults() >= 3,
        "the proxy injected only {} faults in {} requests",
        proxy.stats.faults(),
        proxy
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn a_server_that_always_fails_gives_clear_errors() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 10);
    let store = S3Storage::with_credentials(&server.url("p"), ACCESS_KEY, SECRET_KEY).unwrap();
    let keys: Vec<String> = ["a/a-1", "a/a-2", "b/b-1"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    for key in &keys {
        let mut w = store.create(key, &ObjectMeta::default()).unwrap();
        w.write_all(b"x").unwrap();
        w.commit().unwrap();
    }
    let proxy = FaultyProxy::start(
        server.port,
        Faults {
            error_500: 100,
            drop_before: 0,
            drop_after: 0,
            cut_object_reads: 0,
            seed: 1,
        },
    );
    let broken = url_at(proxy.port, BUCKET, "p", "");

    // Every key of a failed batch delete is reported.
    let failing = S3Storage::with_credentials(&broken, ACCESS_KEY, SECRET_KEY).unwrap();
    let failed = failing.delete(&keys);
    let failed_keys: Vec<&String> = failed.iter().map(|(k, _)| k).collect();
    assert_eq!(failed_keys, keys.iter().collect::<Vec<_>>());
    let reason = failed[0].1.to_string();
    assert!(
        reason.contains("InternalError") && reason.contains("5 attempts"),
        "{reason}"
    );
    assert_eq!(store.list("").unwrap().len(), 3, "nothing was deleted");
    let heads = proxy.stats.heads.lock().unwrap().clone();
    assert!(
        heads
            .iter()
            .all(|h| h.starts_with("POST /sqlbak-test/?delete")
                && h.to_ascii_lowercase().contains("\r\ncontent-md5: ")),
        "DeleteObjects carries Content-MD5: {heads:#?}"
    );

    let out = sqlbak_s3()
        .args(["snapshot", "--db"])
        .arg(&db)
        .args(["--dest", &broken])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("server failed") && err.contains("retry later"),
        "{err}"
    );
    assert_eq!(store.list("").unwrap().len(), 3);
    assert_eq!(
        proxy
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        10,
        "5 attempts for the delete, 5 for the snapshot's listing"
    );
}

#[test]
fn sigkill_mid_upload_leaves_nothing_listed() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("big.db");
    random_db(&db, 40);
    let dest = format!("{}&part_size=5MiB", server.url("k"));
    let spawn = || {
        sqlbak_s3_std()
            .args(["snapshot", "--jobs", "1", "--db"])
            .arg(&db)
            .args(["--dest", &dest])
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.open_uploads().is_empty() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the multipart upload never showed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(
        server.raw_keys(),
        Vec::<String>::new(),
        "nothing was completed"
    );
    assert_eq!(
        server.open_uploads().len(),
        1,
        "the upload was cut off midway"
    );
    let listed = json(&run(&["list", "--json", "--dest", &dest]));
    assert_eq!(listed, serde_json::json!([]), "nothing partial is listed");

    // The next run is unaffected.
    let status = spawn().wait().unwrap();
    assert!(status.success());
    let listed = json(&run(&["list", "--json", "--dest", &dest]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn clear_errors_for_bad_destinations() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 10);

    // A bucket that does not exist: named, with what to do, before anything is captured.
    let missing = url_at(server.port, "no-such-bucket", "p", "");
    for args in [
        vec!["list", "--dest", &missing],
        vec!["snapshot", "--db", db.to_str().unwrap(), "--dest", &missing],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("bucket no-such-bucket does not exist") && err.contains("create it"),
            "{err}"
        );
    }

    // Nothing listening: says which endpoint and what to check.
    let port = free_port();
    let unreachable = url_at(port, BUCKET, "p", "");
    let started = Instant::now();
    let out = run(&["list", "--dest", &unreachable]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot connect to http://127.0.0.1:{port}"))
            && err.contains("check the endpoint"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // No credentials anywhere.
    let out = sqlbak_s3()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["list", "--dest", &server.url("p")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no usable AWS credentials"),
        "{}",
        stderr(&out)
    );

    // Mistakes in the URL are usage errors (exit 2), found before anything is read.
    let output = dir.path().join("restored.db");
    for (url, says) in [
        ("s3://", "bucket name is missing"),
        ("s3://bkt/p?colour=red", "unknown query key \"colour\""),
        ("s3://bkt/p?part_size=1MiB", "between 5MiB and 5GiB"),
    ] {
        for args in [
            vec!["list", "--dest", url],
            vec!["snapshot", "--db", db.to_str().unwrap(), "--dest", url],
            vec!["restore", "--dest", url, "-o", output.to_str().unwrap()],
        ] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        }
    }
    assert!(!output.exists());
}

#[test]
fn a_read_that_keeps_failing_is_not_called_corruption() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 2000);
    snapshot(&db, &server.url("p"));
    // Every object read is cut off halfway, the resumed ones too.
    let proxy = FaultyProxy::start(
        server.port,
        Faults {
            error_500: 0,
            drop_before: 0,
            drop_after: 0,
            cut_object_reads: 100,
            seed: 1,
        },
    );
    let cut = url_at(proxy.port, BUCKET, "p", "");
    let says_unreadable = |text: &str| {
        assert!(
            text.contains("cannot read the snapshot from storage")
                && text.contains("resumes")
                && !text.contains("corrupt"),
            "{text}"
        );
    };

    let out = run(&["verify", "--dest", &cut]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("FAILED  app/"), "{}", stdout(&out));
    says_unreadable(&stdout(&out));

    let out = run(&["verify", "--json", "--dest", &cut]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v[0]["ok"], false, "{v}");
    says_unreadable(v[0]["error"].as_str().unwrap());

    let restored = dir.path().join("restored.db");
    let out = restore(&cut, None, &restored);
    assert_eq!(out.status.code(), Some(1));
    says_unreadable(&stderr(&out));
    assert!(!restored.exists());
    assert!(proxy.stats.cut.load(std::sync::atomic::Ordering::Relaxed) >= 3 * 6);

    // The snapshot itself is fine.
    let out = run(&["verify", "--dest", &server.url("p")]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn prune_on_s3_keeps_the_policy_and_never_touches_foreign_objects() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let url = server.url("p");
    let store = server.storage("p");
    timeline(
        dir.path(),
        &store,
        &[
            "20240101T060000Z",
            "20240101T180000Z",
            "20240102T060000Z",
            "20240102T180000Z",
            "20240103T060000Z",
        ],
    );
    // Foreign objects under the prefix: never listed, never pruned.
    for key in [
        "app/README.txt",
        "app/app-20200101T000000Z.sqlite3",
        "notes.txt",
    ] {
        let mut w = store.create(key, &ObjectMeta::default()).unwrap();
        w.write_all(b"not a snapshot").unwrap();
        w.commit().unwrap();
    }
    let policy = ["--name", "app", "--keep-daily", "2", "--keep-last", "1"];
    let dry = run(&[
        &["prune", "--dry-run", "--json", "--dest", &url][..],
        &policy[..],
    ]
    .concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(server.raw_keys().len(), 8, "a dry run deletes nothing");
    let real = run(&[&["prune", "--json", "--dest", &url][..], &policy[..]].concat());
    assert!(real.status.success(), "{}", stderr(&real));
    assert_eq!(
        json(&real),
        json(&dry),
        "the real run carries out the dry run's plan"
    );
    let mut left = server.raw_keys();
    left.sort();
    assert_eq!(
        left,
        [
            "p/app/README.txt",
            "p/app/app-20200101T000000Z.sqlite3",
            "p/app/app-20240102T180000Z.sqlite3.gz",
            "p/app/app-20240103T060000Z.sqlite3.gz",
            "p/notes.txt",
        ]
    );
}

/// A proxy that relays everything faithfully, apart from what `tamper` says.
fn tampering_proxy(server: &S3Server, tamper: Tamper) -> FaultyProxy {
    let none = Faults {
        error_500: 0,
        drop_before: 0,
        drop_after: 0,
        cut_object_reads: 0,
        seed: 1,
    };
    FaultyProxy::start_tampering(server.port, none, tamper)
}

/// The request line's method and path.
fn request_line(head: &str) -> (&str, &str) {
    let mut words = head.split_whitespace();
    (words.next().unwrap_or(""), words.next().unwrap_or(""))
}

/// A PutObject of a whole object (not a part of a multipart upload).
fn is_put_object(head: &str) -> bool {
    let (method, path) = request_line(head);
    method == "PUT" && path.starts_with(&format!("/{BUCKET}/")) && !path.contains("uploadId=")
}

/// An answer's status.
fn status_of(answer_head: &str) -> u16 {
    answer_head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Answers to PutObject report an ETag that is not the MD5 of what was sent, as from a
/// server that stored other bytes.
fn wrong_put_etag(request: &str, answer: &mut String) {
    if is_put_object(request) && status_of(answer) == 200 {
        set_header(answer, "ETag", "\"00000000000000000000000000000000\"");
    }
}

fn snapshot_via(db: &Path, dest: &str) -> Output {
    sqlbak_s3()
        .args(["snapshot", "--name", "app", "--db"])
        .arg(db)
        .args(["--dest", dest])
        .output()
        .unwrap()
}

fn keys_under(server: &S3Server, prefix: &str) -> Vec<String> {
    server
        .raw_keys()
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .collect()
}

fn requests(proxy: &FaultyProxy, method: &str) -> usize {
    let heads = proxy.stats.heads.lock().unwrap();
    heads.iter().filter(|h| request_line(h).0 == method).count()
}

#[test]
fn an_upload_that_fails_its_check_after_the_write_is_removed() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let small = dir.path().join("app.db");
    make_db(&small, "wal", 2000);
    let big = dir.path().join("big.db");
    random_db(&big, 12);

    // PutObject succeeds, but its answer's ETag disagrees with the data sent.
    let proxy = tampering_proxy(
        &server,
        Tamper {
            alter: Some(Arc::new(wrong_put_etag)),
            ..Tamper::default()
        },
    );
    let out = snapshot_via(&small, &url_at(proxy.port, BUCKET, "put", ""));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("MD5") && err.contains("The object was removed"),
        "{err}"
    );
    assert_eq!(keys_under(&server, "put/"), Vec::<String>::new());
    assert_eq!(
        requests(&proxy, "DELETE"),
        1,
        "the object it wrote was deleted"
    );
    let listed = json(&run(&["list", "--json", "--dest", &server.url("put")]));
    assert_eq!(
        listed,
        serde_json::json!([]),
        "a failed snapshot is not listed"
    );
    // Nothing is in the way of the next run.
    snapshot(&small, &server.url("put"));
    assert_eq!(keys_under(&server, "put/").len(), 1);

    // CompleteMultipartUpload succeeds, but the stored object has another size.
    let proxy = tampering_proxy(
        &server,
        Tamper {
            alter: Some(Arc::new(|request: &str, answer: &mut String| {
                if request_line(request).0 == "HEAD" && status_of(answer) == 200 {
                    set_header(answer, "Content-Length", "1");
                }
            })),
            ..Tamper::default()
        },
    );
    let out = snapshot_via(&big, &url_at(proxy.port, BUCKET, "mp", "&part_size=5MiB"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the server stored 1 bytes") && err.contains("The object was removed"),
        "{err}"
    );
    assert_eq!(keys_under(&server, "mp/"), Vec::<String>::new());
    assert_eq!(server.open_uploads(), Vec::<String>::new());
}

#[test]
fn an_unchecked_object_is_left_when_it_is_not_ours_or_cannot_be_removed() {
    let server = S3Server::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 2000);

    // The object under the key carries another writer's token by the time it is checked.
    let proxy = tampering_proxy(
        &server,
        Tamper {
            alter: Some(Arc::new(|request: &str, answer: &mut String| {
                wrong_put_etag(request, answer);
                if request_line(request).0 == "HEAD" && status_of(answer) == 200 {
                    set_header(answer, "x-amz-meta-sqlbak-writer", "another-writer");
                }
            })),
            ..Tamper::default()
        },
    );
    let out = snapshot_via(&db, &url_at(proxy.port, BUCKET, "foreign", ""));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let keys = keys_under(&server, "foreign/");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        err.contains("not written by this run")
            && err.contains(&format!("s3://{BUCKET}/{}", keys[0])),
        "{err}"
    );
    assert_eq!(
        requests(&proxy, "DELETE"),
        0,
        "never deletes what is not ours"
    );

    // Ours, but the credentials may not delete (no s3:DeleteObject).
    let proxy = tampering_proxy(
        &server,
        Tamper {
            alter: Some(Arc::new(wrong_put_etag)),
            refuse: Some(Arc::new(|request: &str| {
                (request_line(request).0 == "DELETE").then_some((403, "AccessDenied"))
            })),
        },
    );
    let out = snapshot_via(&db, &url_at(proxy.port, BUCKET, "stuck", ""));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let keys = keys_under(&server, "stuck/");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        err.contains("Removing the object failed: access denied")
            && err.contains(&format!("Delete s3://{BUCKET}/{} yourself", keys[0])),
        "{err}"
    );
}
