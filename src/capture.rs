//! A consistent image of a live SQLite database, taken without disturbing its writers or a
//! streaming replicator (such as Litestream) that watches the same file.
//!
//! The source is opened read-only with checkpoint-on-close disabled, so sqlbak never
//! checkpoints, never changes the journal mode and never writes the database. The pages
//! are read inside one read transaction: in WAL mode writers go on committing while we
//! read our snapshot; in rollback mode they wait (up to their busy timeout). Either way the
//! transaction lasts only as long as reading the pages at memory speed, never as long as
//! compression or upload: pages go to the compressor as they are read, and those it has
//! not reached yet wait in a private temporary file ([`stream`]). Opening a WAL database whose
//! `-wal`/`-shm` files are absent makes SQLite create them; we remove exactly those again
//! once no other connection has the database open.

mod stream;

use crate::host;
use chrono::{DateTime, Utc};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stream::PageStream;
use tempfile::TempDir;

/// How the image is taken.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Pages go from one read transaction straight to the compressor as they are read;
    /// those the compressor has not reached yet wait in a temporary file, so the transaction
    /// does not wait for the compressor (up to --tmp-limit).
    #[default]
    Stream,
    /// SQLite's online backup API: a page-for-page copy into a temporary file inside one
    /// read transaction, compressed after the transaction ends.
    Backup,
    /// `VACUUM INTO`: a compacted, defragmented copy (slower, smaller).
    Vacuum,
}

/// What controls a capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Streamed, backup API copy, or `VACUUM INTO`.
    pub method: Method,
    /// How long to wait for a lock before giving up.
    pub busy_timeout: Duration,
    /// Where a copied image, or the pages a streamed one spills, go.
    pub tmp_dir: PathBuf,
    /// The most bytes a streamed capture keeps in `tmp_dir` before its read transaction
    /// waits for the compressor instead; `None`: no limit.
    pub tmp_limit: Option<u64>,
}

/// A captured image: a file in a private temporary directory (removed on drop), or the
/// pages of an open read transaction, streamed once through [`Image::reader`].
#[derive(Debug)]
pub struct Image {
    content: Content,
    /// When the read transaction began: the instant the image reflects.
    pub taken_at: DateTime<Utc>,
    /// Image size in bytes.
    pub size: u64,
    /// SQLite page size.
    pub page_size: u32,
    /// SQLite page count.
    pub page_count: u32,
}

#[derive(Debug)]
enum Content {
    File { _dir: TempDir, path: PathBuf },
    Stream(PageStream),
}

impl Image {
    /// The image's bytes. A streamed image can be read once; a second call, or a call after
    /// the stream ended, reads nothing.
    pub fn reader(&mut self) -> io::Result<Box<dyn Read + Send + '_>> {
        match &mut self.content {
            Content::File { path, .. } => Ok(Box::new(File::open(&*path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open the captured image {}: {e}", path.display()),
                )
            })?)),
            Content::Stream(stream) => Ok(Box::new(stream)),
        }
    }

    /// Whether the pages come straight from the database (no temporary copy).
    pub fn is_streamed(&self) -> bool {
        matches!(self.content, Content::Stream(_))
    }

    /// Ends the capture. For a stream this closes the read transaction and reports why the
    /// stream ended early, if it did; call it before trusting what [`Image::reader`] gave.
    pub fn finish(self) -> Result<(), CaptureError> {
        match self.content {
            Content::File { .. } => Ok(()),
            Content::Stream(mut stream) => stream.join(),
        }
    }
}

/// Why a capture failed, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// We never create the source.
    #[error("database {0} does not exist (sqlbak never creates it); check the path")]
    Missing(PathBuf),
    /// Directories, devices and the like.
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// Wrong file, or a damaged header.
    #[error("{0} is not a SQLite database (its header is not \"SQLite format 3\")")]
    NotSqlite(PathBuf),
    /// A zero-length file is technically an empty database, but never worth a backup.
    #[error("{0} is empty (0 bytes); there is nothing to back up")]
    Empty(PathBuf),
    /// The database stayed locked past the busy timeout.
    #[error(
        "{path} stayed locked for longer than the busy timeout ({timeout}); another process holds a write lock. Retry later or raise --busy-timeout"
    )]
    Locked {
        /// Database path.
        path: PathBuf,
        /// The timeout, for the message.
        timeout: String,
    },
    /// A crashed writer left a hot journal; rolling it back means writing the database,
    /// which sqlbak never does.
    #[error(
        "{0} has a hot journal left by a writer that crashed mid-transaction, and sqlbak (read-only) cannot roll it back; open the database once with the application or `sqlite3 DB 'PRAGMA quick_check'` to recover it, then retry"
    )]
    HotJournal(PathBuf),
    /// The WAL index needs rebuilding and the read-only connection may not write it.
    #[error(
        "{0} needs WAL recovery, which a read-only connection cannot do here; open the database once with the application (or sqlite3) to recover it, then retry"
    )]
    NeedsRecovery(PathBuf),
    /// Anything SQLite reported.
    #[error("cannot read {path}")]
    Sqlite {
        /// Database path.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Temporary file trouble (full disk, permissions).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

const SQLITE_READONLY_RECOVERY: std::ffi::c_int = 8 | (1 << 8);
const SQLITE_READONLY_ROLLBACK: std::ffi::c_int = 8 | (3 << 8);
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const PAGES_PER_STEP: i32 = 4096;
/// Bytes per buffer of a streamed capture.
const STREAM_BUFFER: usize = 1 << 20;
/// Buffers queued in memory between the capture thread and the compressor; beyond them,
/// pages spill to a temporary file.
const STREAM_BUFFERS: usize = 4;
const CAPTURE_DIR_PREFIX: &str = "sqlbak-capture-";

/// Checks that `path` exists and is a regular file, without opening it: closing any
/// descriptor of a database drops every POSIX lock this process holds on it, including
/// SQLite's, so nothing may open the file before the per-database lock is held.
pub fn check_exists(path: &Path) -> Result<fs::Metadata, CaptureError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CaptureError::Missing(path.into()));
        }
        Err(e) => {
            return Err(CaptureError::Io {
                context: format!("cannot read {}", path.display()),
                source: e,
            });
        }
    };
    if !meta.is_file() {
        return Err(CaptureError::NotAFile(path.into()));
    }
    Ok(meta)
}

/// Checks that `path` is an existing, non-empty SQLite database file.
pub fn check_source(path: &Path) -> Result<(), CaptureError> {
    let meta = check_exists(path)?;
    if meta.len() == 0 {
        return Err(CaptureError::Empty(path.into()));
    }
    let mut header = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => CaptureError::NotSqlite(path.into()),
            _ => CaptureError::Io {
                context: format!("cannot read {}", path.display()),
                source: e,
            },
        })?;
    if &header != SQLITE_MAGIC {
        return Err(CaptureError::NotSqlite(path.into()));
    }
    Ok(())
}

/// Takes a consistent image of `source`: streamed from its read transaction when
/// `opts.method` is `Stream` and the database is in WAL mode, otherwise copied into a new
/// temporary directory under `opts.tmp_dir`. `progress(done, total)` is called with page
/// counts during a copy.
pub fn capture(
    source: &Path,
    opts: &CaptureOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<Image, CaptureError> {
    let started = Instant::now();
    check_source(source)?;
    remove_stale_capture_dirs(&opts.tmp_dir);
    let sidecars = Sidecars::observe(source);
    let src = match open_source(source, opts) {
        Ok(src) => src,
        Err(e) => {
            sidecars.tidy(source);
            return Err(classify(e, source, opts));
        }
    };
    if opts.method == Method::Stream {
        match start_stream(src, source, opts, sidecars) {
            Ok(Started::Streaming(image)) => return Ok(image),
            Ok(Started::CannotStream(src, sidecars)) => {
                return copy_into_temp(src, source, opts, sidecars, progress, started);
            }
            Err(e) => return Err(e),
        }
    }
    copy_into_temp(src, source, opts, sidecars, progress, started)
}

/// The source, read-only, never checkpointing on close, polling for locks until the busy
/// timeout.
fn open_source(source: &Path, opts: &CaptureOptions) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut src = Connection::open_with_flags(source, flags)?;
    src.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    BUSY_DEADLINE.with(|d| d.set(deadline_after(opts.busy_timeout)));
    src.busy_handler(Some(retry_until_deadline))?;
    Ok(src)
}

/// What [`start_stream`] managed.
enum Started {
    Streaming(Image),
    /// A SQLite built without the `sqlite_dbpage` table.
    CannotStream(Connection, Sidecars),
}

/// Starts the read transaction and, when the `sqlite_dbpage` table is there, hands the
/// connection to a thread that reads every page of that snapshot through it, as fast as
/// it can (see [`stream`]), ending the transaction as soon as the last page is read.
fn start_stream(
    src: Connection,
    source: &Path,
    opts: &CaptureOptions,
    sidecars: Sidecars,
) -> Result<Started, CaptureError> {
    let fail = |src: Connection, sidecars: Sidecars, e: rusqlite::Error| {
        drop(src);
        sidecars.tidy(source);
        classify(e, source, opts)
    };
    let begun = (|| -> rusqlite::Result<(u32, u32)> {
        src.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_schema;")?;
        let page_size: u32 = src.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_count: u32 = src.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        Ok((page_size, page_count))
    })();
    let taken_at = Utc::now();
    let (page_size, page_count) = match begun {
        Ok(v) => v,
        Err(e) => return Err(fail(src, sidecars, e)),
    };
    // Each page is read once: SQLite's page cache would only add to our memory.
    let _ = src.execute_batch("PRAGMA cache_size = -256");
    if src.prepare("SELECT data FROM sqlite_dbpage").is_err() {
        tracing::debug!("this SQLite has no sqlite_dbpage table; copying with the backup API");
        if let Err(e) = src.execute_batch("COMMIT") {
            return Err(fail(src, sidecars, e));
        }
        return Ok(Started::CannotStream(src, sidecars));
    }

    let (mut pump, mut pages) = stream::channel(STREAM_BUFFERS, &opts.tmp_dir, opts.tmp_limit);
    let deadline = BUSY_DEADLINE.with(Cell::get);
    let source_path = source.to_path_buf();
    let thread_opts = opts.clone();
    let started = Instant::now();
    let worker = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            BUSY_DEADLINE.with(|d| d.set(deadline));
            let classified = |e| classify(e, &source_path, &thread_opts);
            let sent = send_pages(&src, page_size, page_count, &mut pump, &classified);
            // The connection is closed before the sidecars are tidied: their probe opens and
            // closes the database file, which would drop this process's SQLite locks.
            let result = match sent {
                Ok(()) => src
                    .execute_batch("COMMIT")
                    .and_then(|()| src.close().map_err(|(_, e)| e))
                    .map_err(classified),
                Err(e) => {
                    drop(src);
                    Err(e)
                }
            };
            // The last page is read and the transaction over: the compressor may still be
            // reading the spill file, and that no longer holds anything up.
            drop(pump);
            sidecars.tidy(&source_path);
            tracing::debug!(
                "read {page_count} pages in {:.2}s",
                started.elapsed().as_secs_f64()
            );
            result
        })
        .map_err(|e| CaptureError::Io {
            context: "cannot start the capture thread".into(),
            source: e,
        })?;
    pages.set_worker(worker);
    Ok(Started::Streaming(Image {
        content: Content::Stream(pages),
        taken_at,
        size: u64::from(page_size) * u64::from(page_count),
        page_size,
        page_count,
    }))
}

/// Reads every page of the open read transaction, in order, into buffers of about
/// [`STREAM_BUFFER`] bytes for `pump`. Stops quietly when the reader leaves.
fn send_pages(
    src: &Connection,
    page_size: u32,
    page_count: u32,
    pump: &mut stream::Pump,
    sqlite: &dyn Fn(rusqlite::Error) -> CaptureError,
) -> Result<(), CaptureError> {
    let mut stmt = src
        .prepare("SELECT data FROM sqlite_dbpage")
        .map_err(sqlite)?;
    let mut rows = stmt.query([]).map_err(sqlite)?;
    let mut buf = Vec::with_capacity(STREAM_BUFFER);
    let mut pages = 0u32;
    while let Some(row) = rows.next().map_err(sqlite)? {
        let data = row
            .get_ref(0)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(sqlite)?;
        if data.len() != page_size as usize {
            return Err(sqlite(stream_mismatch(format!(
                "page {} has {} bytes, expected {page_size}",
                pages + 1,
                data.len()
            ))));
        }
        buf.extend_from_slice(data);
        pages += 1;
        if buf.len() >= STREAM_BUFFER {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(STREAM_BUFFER));
            if !pump.push(full)? {
                return Ok(());
            }
        }
    }
    if pages != page_count {
        return Err(sqlite(stream_mismatch(format!(
            "read {pages} pages, expected {page_count}"
        ))));
    }
    if !buf.is_empty() {
        pump.push(buf)?;
    }
    Ok(())
}

fn stream_mismatch(what: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!("the page stream is inconsistent: {what}")),
    )
}

/// A new private directory under `tmp_dir`, named so that a later run can tell it is
/// ours and remove it if this process dies. `purpose` completes the error message.
fn capture_dir(tmp_dir: &Path, purpose: &str) -> Result<TempDir, CaptureError> {
    tempfile::Builder::new()
        .prefix(&format!("{CAPTURE_DIR_PREFIX}{}", host::temp_tag_prefix()))
        .rand_bytes(host::TEMP_RAND_LEN)
        .tempdir_in(tmp_dir)
        .map_err(|e| CaptureError::Io {
            context: format!(
                "cannot create a temporary directory in {}{purpose} (set --tmp-dir to a writable directory)",
                tmp_dir.display()
            ),
            source: e,
        })
}

/// Copies the image into a private temporary directory: the backup API inside one read
/// transaction, or `VACUUM INTO`.
fn copy_into_temp(
    src: Connection,
    source: &Path,
    opts: &CaptureOptions,
    sidecars: Sidecars,
    progress: &dyn Fn(u64, u64),
    started: Instant,
) -> Result<Image, CaptureError> {
    let dir = match capture_dir(&opts.tmp_dir, "") {
        Ok(dir) => dir,
        Err(e) => {
            drop(src);
            sidecars.tidy(source);
            return Err(e);
        }
    };
    let image_path = dir.path().join("image.sqlite3");
    let result = copy_image(src, &image_path, opts.method, progress);
    sidecars.tidy(source);
    let taken_at = result.map_err(|e| classify(e, source, opts))?;

    let size = fs::metadata(&image_path)
        .map_err(|e| CaptureError::Io {
            context: format!("cannot stat {}", image_path.display()),
            source: e,
        })?
        .len();
    let (page_size, page_count) = read_header(&image_path).map_err(|e| CaptureError::Io {
        context: format!("cannot read {}", image_path.display()),
        source: e,
    })?;
    tracing::debug!(
        "copied the image in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(Image {
        content: Content::File {
            _dir: dir,
            path: image_path,
        },
        taken_at,
        size,
        page_size,
        page_count,
    })
}

fn copy_image(
    src: Connection,
    image: &Path,
    method: Method,
    progress: &dyn Fn(u64, u64),
) -> rusqlite::Result<DateTime<Utc>> {
    let taken_at = match method {
        Method::Vacuum => {
            // VACUUM INTO reads inside its own single read transaction.
            let taken_at = Utc::now();
            let target = image
                .to_str()
                .ok_or_else(|| rusqlite::Error::InvalidPath(image.to_path_buf()))?;
            src.execute("VACUUM INTO ?1", [target])?;
            taken_at
        }
        Method::Backup | Method::Stream => {
            // One read transaction for the whole copy: the backup never restarts, however
            // much other processes write, and the image is one point in time.
            src.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_schema;")?;
            let taken_at = Utc::now();
            let mut dst = Connection::open(image)?;
            dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")?;
            {
                let backup = Backup::new(&src, &mut dst)?;
                loop {
                    match backup.step(PAGES_PER_STEP)? {
                        StepResult::Done => break,
                        StepResult::More => {}
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                    let p = backup.progress();
                    let total = u64::try_from(p.pagecount).unwrap_or(0);
                    let left = u64::try_from(p.remaining).unwrap_or(0);
                    progress(total.saturating_sub(left), total);
                }
            }
            dst.close().map_err(|(_, e)| e)?;
            src.execute_batch("COMMIT")?;
            taken_at
        }
    };
    src.close().map_err(|(_, e)| e)?;
    let _ = fs::set_permissions(image, fs::Permissions::from_mode(0o600));
    Ok(taken_at)
}

thread_local! {
    /// When the current thread's capture stops waiting for locks.
    static BUSY_DEADLINE: Cell<Instant> = Cell::new(Instant::now());
}

/// Retries a lock every millisecond until the deadline. SQLite's own busy handler backs off
/// to 100 ms sleeps, and in rollback-journal mode a busy writer then wins nearly every
/// race for the lock, so a reader can wait for seconds; polling finds the short gaps
/// between its transactions.
fn retry_until_deadline(_attempt: i32) -> bool {
    if BUSY_DEADLINE.with(|d| Instant::now() >= d.get()) {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// `now + timeout`, saturating at a century for absurd timeouts instead of panicking.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86400)))
        .unwrap_or(now)
}

fn classify(e: rusqlite::Error, source: &Path, opts: &CaptureOptions) -> CaptureError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return CaptureError::Locked {
                    path: source.into(),
                    timeout: humantime::format_duration(opts.busy_timeout).to_string(),
                };
            }
            ErrorCode::NotADatabase => return CaptureError::NotSqlite(source.into()),
            ErrorCode::ReadOnly if f.extended_code == SQLITE_READONLY_ROLLBACK => {
                return CaptureError::HotJournal(source.into());
            }
            ErrorCode::ReadOnly if f.extended_code == SQLITE_READONLY_RECOVERY => {
                return CaptureError::NeedsRecovery(source.into());
            }
            ErrorCode::DiskFull => {
                return CaptureError::Io {
                    context: format!(
                        "the temporary directory {} is full; free space or set --tmp-dir",
                        opts.tmp_dir.display()
                    ),
                    source: io::Error::from(io::ErrorKind::StorageFull),
                };
            }
            _ => {}
        }
    }
    CaptureError::Sqlite {
        path: source.into(),
        source: e,
    }
}

/// Reads page size and page count from a database header.
pub fn read_header(path: &Path) -> io::Result<(u32, u32)> {
    let mut h = [0u8; 100];
    File::open(path)?.read_exact(&mut h)?;
    if &h[..16] != SQLITE_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a SQLite database",
        ));
    }
    let raw = u32::from(u16::from_be_bytes([h[16], h[17]]));
    let page_size = if raw == 1 { 65536 } else { raw };
    let page_count = u32::from_be_bytes([h[28], h[29], h[30], h[31]]);
    Ok((page_size, page_count))
}

fn remove_stale_capture_dirs(tmp_dir: &Path) {
    host::remove_stale_temporaries(tmp_dir, |name| name.strip_prefix(CAPTURE_DIR_PREFIX));
}

/// Which of a database's `-wal`/`-shm` files existed before we opened it.
struct Sidecars {
    wal_existed: bool,
    shm_existed: bool,
}

/// The path of a database's companion file: `db` with `suffix` (`-wal`, `-shm`,
/// `-journal`) appended.
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Sidecars {
    fn observe(db: &Path) -> Self {
        Sidecars {
            wal_existed: sidecar(db, "-wal").exists(),
            shm_existed: sidecar(db, "-shm").exists(),
        }
    }

    /// Removes `-wal`/`-shm` files that our read-only connection created, but only while
    /// no other connection has the database open (proved by taking SQLite's exclusive
    /// lock for a moment) and only an empty `-wal`: another process's data is never
    /// touched.
    fn tidy(&self, db: &Path) {
        let wal = sidecar(db, "-wal");
        let shm = sidecar(db, "-shm");
        let created_wal = !self.wal_existed && wal.exists();
        let created_shm = !self.shm_existed && shm.exists();
        if !created_wal && !created_shm {
            return;
        }
        let Some(_lock) = ExclusiveProbe::try_acquire(db) else {
            tracing::debug!(
                "{} is in use by another connection; leaving its -wal/-shm files",
                db.display()
            );
            return;
        };
        if created_wal {
            if fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
                let _ = fs::remove_file(&wal);
            } else {
                return;
            }
        }
        if created_shm {
            let _ = fs::remove_file(&shm);
        }
    }
}

/// SQLite's exclusive lock (a write lock on the shared-lock byte range) held for as long
/// as this value lives. Every open connection in WAL mode holds a shared lock there, so
/// getting it proves no other connection has the database open.
struct ExclusiveProbe {
    _file: File,
}

impl ExclusiveProbe {
    const PENDING_BYTE: i64 = 0x4000_0000;
    const SHARED_FIRST: i64 = Self::PENDING_BYTE + 2;
    const SHARED_SIZE: i64 = 510;

    fn try_acquire(db: &Path) -> Option<Self> {
        let file = OpenOptions::new().read(true).write(true).open(db).ok()?;
        let lock = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as _,
            l_whence: nix::libc::SEEK_SET as _,
            l_start: Self::SHARED_FIRST,
            l_len: Self::SHARED_SIZE,
            l_pid: 0,
        };
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETLK(&lock)).ok()?;
        Some(ExclusiveProbe { _file: file })
    }
}
