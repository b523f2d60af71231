//! The way back: a stored snapshot streamed out of storage, decompressed into a local
//! file, and proved to be a healthy SQLite database before anyone relies on it.

use crate::catalog::Snapshot;
use crate::codec::{self, DecodeReport};
use crate::encryption::Identities;
use crate::storage::Storage;
use crate::storage::local::WriteBehind;
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Streams `snap` from `storage` into `out` (an empty file), checking gzip CRCs and the
/// recorded size and sha256; the file is fsynced before this returns.
pub fn fetch(
    storage: &dyn Storage,
    snap: &Snapshot,
    identities: Option<&Identities>,
    out: &File,
    progress: &dyn Fn(u64),
) -> Result<DecodeReport> {
    let key = snap.key.key();
    let context = || format!("cannot fetch {key} from {}", storage.url());
    let reader = StorageReader(storage.open(&key)?);
    let behind = WriteBehind::new(out).context("cannot write the restored image")?;
    let mut writer = BufWriter::with_capacity(1 << 20, SyncingWriter { file: out, behind });
    let report = if snap.key.encrypted {
        let Some(ids) = identities else {
            bail!(missing_identity(&key));
        };
        let plain = ids.decrypt(reader).with_context(context)?;
        codec::decompress(plain, &mut writer, decode_jobs(), progress).with_context(context)?
    } else {
        codec::decompress(reader, &mut writer, decode_jobs(), progress).with_context(context)?
    };
    writer.flush().context("cannot write the restored image")?;
    let SyncingWriter { behind, .. } = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write the restored image")?;
    behind
        .finish()
        .and_then(|()| out.sync_all())
        .context("cannot fsync the restored image")?;
    // Backends that record the image beside the object (S3 metadata) get a second opinion.
    if let Some(stored) = storage.image_meta(&key)? {
        let sha_differs = stored
            .image_sha256
            .as_ref()
            .is_some_and(|sha| *sha != report.sha256);
        if stored.image_size != report.size || sha_differs {
            bail!(
                "{key} in {} decodes to {} bytes with sha256 {}, but the object's metadata \
records {} bytes{}: the object was replaced or damaged",
                storage.url(),
                report.size,
                report.sha256,
                stored.image_size,
                stored
                    .image_sha256
                    .map(|sha| format!(" with sha256 {sha}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(report)
}

/// An object being read from storage. The decoders report bad data with the error kinds
/// `UnexpectedEof`, `InvalidData` and `InvalidInput`; an error of those kinds coming from
/// storage itself is re-kinded, so a failed read is never taken for a damaged snapshot.
struct StorageReader(Box<dyn io::Read + Send>);

impl io::Read for StorageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput => io::Error::other(e),
            _ => e,
        })
    }
}

/// The error for an encrypted snapshot and no identity to decrypt it with.
pub fn missing_identity(key: &str) -> crate::exit::Exit {
    crate::exit::usage(format!(
        "{key} is encrypted with age; pass --age-identity FILE (or set SQLBAK_AGE_IDENTITY, or age_identity_file in the config)"
    ))
}

/// The restored file, flushed to disk in the background as it grows.
struct SyncingWriter<'a> {
    file: &'a File,
    behind: WriteBehind,
}

impl Write for SyncingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.behind.wrote(n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Threads inflating members: one per CPU.
fn decode_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How thoroughly a restored image is checked with SQLite, on top of the gzip CRCs and
/// the trailer's size and sha256 (which already prove the bytes are the ones captured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Check {
    /// `PRAGMA integrity_check`: also cross-checks every index against its table, which
    /// can take several times as long as the decompression on a large database.
    Full,
    /// `PRAGMA quick_check`: every page, record and b-tree, but not index contents.
    #[default]
    Quick,
    /// Only the header's page count against the file size.
    None,
}

impl Check {
    fn pragma(self) -> Option<&'static str> {
        match self {
            Check::Full => Some("integrity_check"),
            Check::Quick => Some("quick_check"),
            Check::None => None,
        }
    }
}

/// Proves `path` is a healthy SQLite database: the header's page count agrees with the
/// file size, and, unless `check` is `None`, `PRAGMA integrity_check` (or `quick_check`)
/// says ok. Opens the file immutable, so no `-wal`/`-shm` files appear beside it.
pub fn check_integrity(path: &Path, check: Check) -> Result<()> {
    let (page_size, page_count) = crate::capture::read_header(path)
        .with_context(|| format!("{} is not a SQLite database", path.display()))?;
    let len = std::fs::metadata(path)?.len();
    let expected = u64::from(page_size) * u64::from(page_count);
    if page_count > 0 && len != expected {
        bail!(
            "the image is {len} bytes but its header says {page_count} pages of {page_size} bytes ({expected} bytes): it is truncated or damaged"
        );
    }
    let Some(pragma) = check.pragma() else {
        return Ok(());
    };
    let uri = format!("file:{}?immutable=1", uri_escape(&path.to_string_lossy()));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&uri, flags)
        .with_context(|| format!("cannot open {} with SQLite", path.display()))?;
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}(20)"))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .with_context(|| format!("PRAGMA {pragma} failed on {}", path.display()))?;
    if rows.len() != 1 || rows[0] != "ok" {
        bail!("PRAGMA {pragma} found problems: {}", rows.join("; "));
    }
    Ok(())
}

fn uri_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SnapshotKey;
    use crate::codec::{CompressOptions, ImageMeta};
    use crate::encryption::Recipients;
    use crate::storage::{ObjectInfo, ObjectMeta, ObjectWriter, StorageError};
    use age::secrecy::ExposeSecret;
    use std::io::Read;

    /// One object whose reads fail after `fail_at` bytes, with an error of `kind`.
    struct FailingStorage {
        object: Vec<u8>,
        fail_at: usize,
        kind: io::ErrorKind,
    }

    struct FailingReader {
        data: Vec<u8>,
        pos: usize,
        fail_at: usize,
        kind: io::ErrorKind,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::new(self.kind, "the disk went away"));
            }
            let end = self.data.len().min(self.fail_at).min(self.pos + buf.len());
            let n = end - self.pos;
            buf[..n].copy_from_slice(&self.data[self.pos..end]);
            self.pos = end;
            Ok(n)
        }
    }

    impl Storage for FailingStorage {
        fn url(&self) -> String {
            "/backups".into()
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StorageError> {
            Ok(Vec::new())
        }
        fn create(&self, _: &str, _: &ObjectMeta) -> Result<Box<dyn ObjectWriter>, StorageError> {
            unreachable!("the tests only read")
        }
        fn open(&self, _: &str) -> Result<Box<dyn Read + Send>, StorageError> {
            Ok(Box::new(FailingReader {
                data: self.object.clone(),
                pos: 0,
                fail_at: self.fail_at,
                kind: self.kind,
            }))
        }
        fn delete(&self, _: &[String]) -> Vec<(String, StorageError)> {
            Vec::new()
        }
    }

    fn snapshot_bytes(recipients: Option<&Recipients>) -> Vec<u8> {
        let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let opts = CompressOptions {
            level: 1,
            jobs: 1,
            chunk_size: 16 * 1024,
        };
        let trailer = |size, sha: &str| ImageMeta {
            size,
            sha256: sha.to_string(),
            ..ImageMeta::default()
        };
        let mut out = Vec::new();
        match recipients {
            Some(r) => {
                let mut w = r.encrypt(&mut out).unwrap();
                codec::compress(&image[..], &mut w, &opts, trailer, &|_| {}).unwrap();
                w.finish().unwrap();
            }
            None => {
                codec::compress(&image[..], &mut out, &opts, trailer, &|_| {}).unwrap();
            }
        }
        out
    }

    #[test]
    fn a_read_failure_is_not_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let key_file = dir.path().join("key.txt");
        std::fs::write(&key_file, id.to_string().expose_secret()).unwrap();
        let identities = Identities::load(&key_file).unwrap();
        let recipients = Recipients::parse(&[id.to_public().to_string()], None).unwrap();
        for encrypted in [false, true] {
            let object = snapshot_bytes(encrypted.then_some(&recipients));
            let time = chrono::DateTime::UNIX_EPOCH;
            let snap = Snapshot {
                key: SnapshotKey::new("app", time, encrypted),
                size: object.len() as u64,
            };
            // At the start (inside the gzip or age header), and midway through the data.
            for fail_at in [0, 30, object.len() / 2] {
                // InvalidData and UnexpectedEof are what the decoders say about bad data;
                // from storage they still mean that reading failed.
                for kind in [
                    io::ErrorKind::Other,
                    io::ErrorKind::InvalidData,
                    io::ErrorKind::UnexpectedEof,
                ] {
                    let storage = FailingStorage {
                        object: object.clone(),
                        fail_at,
                        kind,
                    };
                    let out = tempfile::tempfile().unwrap();
                    let err = fetch(&storage, &snap, Some(&identities), &out, &|_| {})
                        .expect_err("the read fails");
                    let text = format!("{err:#}");
                    assert!(
                        text.contains("cannot read the snapshot from storage")
                            && text.contains("the disk went away"),
                        "encrypted {encrypted}, fail at {fail_at}, {kind:?}: {text}"
                    );
                    for word in ["corrupt", "truncated", "not a valid age file"] {
                        assert!(!text.contains(word), "{kind:?}: {text}");
                    }
                }
            }
            // The same object, read whole, is fine.
            let storage = FailingStorage {
                object: object.clone(),
                fail_at: usize::MAX,
                kind: io::ErrorKind::Other,
            };
            let out = tempfile::tempfile().unwrap();
            fetch(&storage, &snap, Some(&identities), &out, &|_| {}).unwrap();
        }
    }
}
