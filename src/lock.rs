//! The per-database lock that keeps overlapping runs (two cron lines, a timer and a manual
//! run, or two threads of the daemon) from snapshotting and pruning one database at once.
//!
//! It is an exclusive `flock(2)` on `.<file>.sqlbak-lock` in the directory of the real
//! database file (symlinks resolved), because that directory must be writable anyway for
//! SQLite's `-shm` file in WAL mode, and every run that reaches the same file finds the same
//! lock whatever path it was given. The name matches none of SQLite's own
//! (`-wal`, `-shm`, `-journal`) nor a database pattern, so neither SQLite nor a replicator
//! such as Litestream ever looks at it. The kernel releases a `flock` when its holder exits
//! or dies, so a lock is never stale; the file stays in place between runs (deleting it
//! would race with a run that has it open) and holds the holder's pid while it is held.
//!
//! When that directory is not writable and the file does not exist yet, the lock falls back
//! to `sqlbak-<name>-<hash of the path>.lock` in the temporary directory, with a warning:
//! it then only excludes runs that share that directory (not a unit with `PrivateTmp=`).

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting run retries the lock.
const POLL: Duration = Duration::from_millis(100);

/// The suffix of lock files beside databases.
pub const LOCK_SUFFIX: &str = ".sqlbak-lock";

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it and the wait ran out.
    #[error(
        "another sqlbak run{holder} holds the lock on {what} ({lock_file}){waited}; this run did nothing. Pass --wait DURATION (or set `wait` in the config) to wait for it"
    )]
    Held {
        /// What is locked, for the message.
        what: String,
        /// The lock file.
        lock_file: PathBuf,
        /// ` (pid 12 on host, since …)` when the holder recorded itself, else empty.
        holder: String,
        /// ` after waiting 5s` when a wait was asked for, else empty.
        waited: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {what}: {context}")]
    Io {
        /// What was to be locked.
        what: String,
        /// What failed.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl LockError {
    /// Whether the lock is simply held by another run (exit code 4), as opposed to broken.
    pub fn is_held(&self) -> bool {
        matches!(self, LockError::Held { .. })
    }
}

/// An exclusive lock on one file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: Flock<File>,
    path: PathBuf,
    writable: bool,
}

impl FileLock {
    /// Locks `path` (created 0644 if missing, never through a symlink), retrying until
    /// `wait` has passed. `what` names the locked thing in messages.
    pub fn acquire(path: &Path, what: &str, wait: Duration) -> Result<FileLock, LockError> {
        let (file, writable) = open_lock_file(path).map_err(|source| LockError::Io {
            what: what.to_string(),
            context: format!("cannot open the lock file {}: {source}", path.display()),
            source,
        })?;
        Self::lock(file, path, writable, what, wait)
    }

    fn lock(
        mut file: File,
        path: &Path,
        writable: bool,
        what: &str,
        wait: Duration,
    ) -> Result<FileLock, LockError> {
        let deadline = crate::capture::deadline_after(wait);
        let mut announced = false;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(file) => {
                    return Ok(FileLock {
                        file,
                        path: path.to_path_buf(),
                        writable,
                    });
                }
                Err((f, Errno::EAGAIN | Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    let source = io::Error::from(errno);
                    return Err(LockError::Io {
                        what: what.to_string(),
                        context: format!("cannot lock {}: {source}", path.display()),
                        source,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Held {
                    what: what.to_string(),
                    lock_file: path.to_path_buf(),
                    holder: read_holder(&file)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                    waited: if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" after waiting {}", humantime::format_duration(wait))
                    },
                });
            }
            if !announced {
                announced = true;
                tracing::info!(
                    "another run{} holds the lock on {what}; waiting up to {} for it",
                    read_holder(&file)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                    humantime::format_duration(wait)
                );
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Writes who holds the lock into the file, for the message another run prints.
    /// Best effort: a lock file we could only open read-only locks just as well.
    pub fn record_holder(&self) {
        if !self.writable {
            return;
        }
        let line = format!(
            "pid {} on {}, since {}\n",
            std::process::id(),
            crate::host::hostname(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(line.as_bytes(), 0));
        if let Err(e) = written {
            tracing::debug!("cannot record the holder in {}: {e}", self.path.display());
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if self.writable {
            // Clear the holder line before the lock goes (the flock itself is released
            // when the descriptor closes right after).
            let _ = self.file.set_len(0);
        }
    }
}

/// Opens a lock file for locking: read-write (created if missing), else read-only when it
/// exists but belongs to someone else; `flock` works on either.
fn open_lock_file(path: &Path) -> io::Result<(File, bool)> {
    let mut rw = OpenOptions::new();
    rw.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW);
    match rw.open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if denied(&e) => OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map(|f| (f, false))
            .map_err(|_| e),
        Err(e) => Err(e),
    }
}

fn denied(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// The holder line of a held lock file, sanitized, if there is one.
fn read_holder(file: &File) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text: String = String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()?
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The lock held on one database for the length of a run.
#[derive(Debug)]
pub struct DatabaseLock {
    lock: FileLock,
}

impl DatabaseLock {
    /// Takes the lock of the database at `database` (which must exist), waiting up to
    /// `wait` for another run to release it.
    pub fn acquire(database: &Path, wait: Duration) -> Result<DatabaseLock, LockError> {
        let what = database.display().to_string();
        let real = std::fs::canonicalize(database).map_err(|source| LockError::Io {
            what: what.clone(),
            context: format!("cannot resolve {}: {source}", database.display()),
            source,
        })?;
        let beside = lock_path_beside(&real);
        let lock = match open_lock_file(&beside) {
            Ok((file, writable)) => FileLock::lock(file, &beside, writable, &what, wait)?,
            Err(e) if denied(&e) => {
                let fallback = std::env::temp_dir().join(fallback_file_name(&real));
                tracing::warn!(
                    "cannot create the lock file {} ({e}); locking {} instead, which only keeps out runs that use the same temporary directory. Make the database's directory writable for sqlbak (WAL databases need that anyway)",
                    beside.display(),
                    fallback.display()
                );
                FileLock::acquire(&fallback, &what, wait)?
            }
            Err(source) => {
                return Err(LockError::Io {
                    what,
                    context: format!("cannot open the lock file {}: {source}", beside.display()),
                    source,
                });
            }
        };
        lock.record_holder();
        Ok(DatabaseLock { lock })
    }

    /// The lock file in use.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }
}

/// `.<file>.sqlbak-lock` in the database's directory.
pub fn lock_path_beside(database: &Path) -> PathBuf {
    let file = database
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    database.with_file_name(format!(".{file}{LOCK_SUFFIX}"))
}

/// `sqlbak-<file>-<16 hex digits of sha256(path)>.lock`: unique per real database path,
/// readable in a listing of the temporary directory.
fn fallback_file_name(real: &Path) -> String {
    let file: String = real
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(real.as_os_str().as_encoded_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sqlbak-{file}-{hash}.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_names_never_look_like_sqlite_files() {
        let p = lock_path_beside(Path::new("/var/lib/app/app.db"));
        assert_eq!(p, Path::new("/var/lib/app/.app.db.sqlbak-lock"));
        let name = p.file_name().unwrap().to_str().unwrap();
        for sqlite_suffix in ["-wal", "-shm", "-journal", ".db", ".sqlite", ".sqlite3"] {
            assert!(!name.ends_with(sqlite_suffix), "{name}");
        }
        let f = fallback_file_name(Path::new("/srv/my app/app.db"));
        assert!(
            f.starts_with("sqlbak-app.db-") && f.ends_with(".lock"),
            "{f}"
        );
        assert_ne!(f, fallback_file_name(Path::new("/srv/other/app.db")));
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_then_granted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        let first = DatabaseLock::acquire(&db, Duration::ZERO).unwrap();
        assert_eq!(first.path(), dir.path().join(".app.db.sqlbak-lock"));
        let err = DatabaseLock::acquire(&db, Duration::from_millis(250)).unwrap_err();
        assert!(err.is_held());
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("after waiting"),
            "{msg}"
        );
        drop(first);
        let again = DatabaseLock::acquire(&db, Duration::ZERO).unwrap();
        drop(again);
        assert_eq!(
            std::fs::read(dir.path().join(".app.db.sqlbak-lock")).unwrap(),
            b""
        );
    }

    #[test]
    fn a_waiting_run_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        let first = DatabaseLock::acquire(&db, Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let started = Instant::now();
        let second = DatabaseLock::acquire(&db, Duration::from_secs(20));
        releaser.join().unwrap();
        assert!(second.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn symlinked_paths_share_one_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let _held = DatabaseLock::acquire(&db, Duration::ZERO).unwrap();
        assert!(
            DatabaseLock::acquire(&link, Duration::ZERO)
                .unwrap_err()
                .is_held()
        );
    }

    #[test]
    fn a_symlink_planted_as_the_lock_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let lock = dir.path().join("planted.lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        assert!(FileLock::acquire(&lock, "x", Duration::ZERO).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }
}
