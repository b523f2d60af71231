//! The storage contract, run against every backend: a local directory and a real
//! S3-compatible server. The commands rely on exactly these behaviours.

mod common;

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use sqlbak::storage::local::LocalStorage;
use sqlbak::storage::s3::S3Storage;
use sqlbak::storage::{ObjectMeta, Storage, StorageError};
use std::io::{Read, Write};

fn meta(tag: u8) -> ObjectMeta {
    ObjectMeta {
        image_size: 1000 + u64::from(tag),
        image_sha256: Some(format!("{tag:02x}").repeat(32)),
    }
}

/// Deterministic bytes that do not compress, `len` long.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put(store: &dyn Storage, key: &str, content: &[u8], tag: u8) -> Result<(), StorageError> {
    let mut w = store.create(key, &meta(tag))?;
    // Odd-sized writes, as a compressor would make them.
    for chunk in content.chunks(777_777) {
        w.write_all(chunk).expect("write");
    }
    w.commit()
}

fn read(store: &dyn Storage, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open(key)
        .unwrap_or_else(|e| panic!("open {key}: {e}"))
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn keys(store: &dyn Storage, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"))
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// `big` is larger than one multipart part of the S3 backend under test.
fn contract(store: &dyn Storage, big: usize) {
    assert_eq!(keys(store, ""), Vec::<String>::new(), "starts empty");

    // Created objects appear only once committed, with their size and content.
    let small = data(1000, 1);
    let mut w = store.create("app/app-1.sqlite3.gz", &meta(1)).unwrap();
    w.write_all(&small).unwrap();
    assert!(keys(store, "").is_empty(), "invisible until committed");
    w.commit().unwrap();
    let listed = store.list("").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "app/app-1.sqlite3.gz");
    assert_eq!(listed[0].size, 1000);
    assert_eq!(read(store, "app/app-1.sqlite3.gz"), small);

    // A large object (several parts on S3) round-trips byte for byte.
    let large = data(big, 2);
    put(store, "app/app-2.sqlite3.gz", &large, 2).unwrap();
    assert_eq!(read(store, "app/app-2.sqlite3.gz"), large);
    assert_eq!(store.list("app/").unwrap()[1].size, big as u64);

    // What the backend recorded beside the object, if anything, is what it was given.
    for (key, tag) in [("app/app-1.sqlite3.gz", 1), ("app/app-2.sqlite3.gz", 2)] {
        if let Some(m) = store.image_meta(key).unwrap() {
            assert_eq!(m, meta(tag), "{key}");
        }
    }

    // Dropped without commit: nothing visible, nothing to open, small or large.
    for len in [10, big] {
        let mut w = store.create("app/app-3.sqlite3.gz", &meta(3)).unwrap();
        w.write_all(&data(len, 3)).unwrap();
        drop(w);
        assert_eq!(
            keys(store, ""),
            ["app/app-1.sqlite3.gz", "app/app-2.sqlite3.gz"]
        );
        assert!(matches!(
            store.open("app/app-3.sqlite3.gz"),
            Err(StorageError::NotFound { .. })
        ));
    }

    // An existing key is never overwritten: create or commit says AlreadyExists.
    for content in [data(10, 4), data(big, 4)] {
        let result = store
            .create("app/app-1.sqlite3.gz", &meta(4))
            .and_then(|mut w| {
                w.write_all(&content).unwrap();
                w.commit()
            });
        assert!(
            matches!(result, Err(StorageError::AlreadyExists { .. })),
            "{result:?}"
        );
        assert_eq!(read(store, "app/app-1.sqlite3.gz"), small, "untouched");
    }

    // Two writers racing for one new key: exactly the first to commit wins, whether the
    // object is one request or several parts.
    for (i, len) in [(5, 10), (6, big)] {
        let key = format!("race/race-{i}.sqlite3.gz");
        let mut first = store.create(&key, &meta(i)).unwrap();
        let mut second = store.create(&key, &meta(i + 10)).unwrap();
        first.write_all(&data(len, 5)).unwrap();
        second.write_all(&data(len, 6)).unwrap();
        first.commit().unwrap();
        let lost = second.commit();
        assert!(
            matches!(lost, Err(StorageError::AlreadyExists { .. })),
            "{lost:?}"
        );
        assert_eq!(read(store, &key), data(len, 5));
    }

    // Listing by prefix.
    put(store, "other/other-1.sqlite3.gz", b"x", 7).unwrap();
    assert_eq!(
        keys(store, "app/"),
        ["app/app-1.sqlite3.gz", "app/app-2.sqlite3.gz"]
    );
    assert_eq!(keys(store, "other/"), ["other/other-1.sqlite3.gz"]);
    assert_eq!(keys(store, "ap"), keys(store, "app/"));
    assert_eq!(keys(store, "").len(), 5);
    assert_eq!(keys(store, "nothing/"), Vec::<String>::new());

    // Missing objects.
    assert!(matches!(
        store.open("app/app-9.sqlite3.gz"),
        Err(StorageError::NotFound { .. })
    ));

    // A batch delete removes what it can and reports each key it could not.
    let failed = store.delete(&[
        "app/app-1.sqlite3.gz".to_string(),
        "../escape".to_string(),
        "other/other-1.sqlite3.gz".to_string(),
        "app/.hidden".to_string(),
    ]);
    let failed_keys: Vec<&str> = failed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(failed_keys, ["../escape", "app/.hidden"], "{failed:?}");
    assert_eq!(
        keys(store, ""),
        [
            "app/app-2.sqlite3.gz",
            "race/race-5.sqlite3.gz",
            "race/race-6.sqlite3.gz"
        ]
    );
}

#[test]
fn local_directory_meets_the_contract() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().join("dest");
    std::fs::create_dir(&root).unwrap();
    contract(&LocalStorage::new(root), 11 << 20);
}

#[test]
fn s3_meets_the_contract() {
    let server = S3Server::start();
    let url = format!("{}&part_size=5MiB", server.url("contract"));
    let store = S3Storage::with_credentials(&url, ACCESS_KEY, SECRET_KEY).unwrap();
    contract(&store, 11 << 20);
    // Everything lived under the prefix, and no upload was left behind.
    assert!(
        server.raw_keys().iter().all(|k| k.starts_with("contract/")),
        "{:?}",
        server.raw_keys()
    );
    assert_eq!(server.open_uploads(), Vec::<String>::new());
}
