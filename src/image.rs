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
    let context = || format!("cannot restore {key} from {}", storage.url());
    let reader = storage.open(&key)?;
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
