//! Where snapshots live. Every backend implements the same small contract, and the
//! commands see nothing else: list a prefix, create an object atomically, open one for
//! reading, delete a batch.

pub mod local;
pub mod s3;

use std::io::{self, Read, Write};
use std::path::PathBuf;

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the destination root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// Failures a backend reports, each with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading something that is not there.
    #[error("{key} does not exist in {dest}")]
    NotFound {
        /// Destination URL.
        dest: String,
        /// Missing key.
        key: String,
    },
    /// Snapshots are never overwritten.
    #[error("{key} already exists in {dest}; snapshots are never overwritten")]
    AlreadyExists {
        /// Destination URL.
        dest: String,
        /// Existing key.
        key: String,
    },
    /// The destination root itself is missing.
    #[error("destination {0} does not exist; check --dest (a snapshot creates it)")]
    MissingDestination(String),
    /// A destination URL we cannot use.
    #[error("unsupported destination {0:?}: {1}")]
    BadDestination(String, String),
    /// A storage service failed or refused a request (after any retries), with what to do.
    #[error("{context}: {reason}")]
    Remote {
        /// What was being done, naming the object or bucket.
        context: String,
        /// What went wrong and what the user can do about it.
        reason: String,
    },
    /// An I/O failure, with what was being done.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What a backend may record beside an object: the image it holds, for an end-to-end
/// check that does not need the object's content (e.g. S3 object metadata).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// Uncompressed image size in bytes.
    pub image_size: u64,
    /// Lowercase hex sha256 of the uncompressed image, when known before the object is
    /// written. `snapshot` leaves it out: hashing the image up front would cost a full extra
    /// read on the critical path, and the trailer inside the stream records it anyway.
    pub image_sha256: Option<String>,
}

/// An object being written. Nothing is visible under its key until `commit` returns;
/// dropping it without committing discards everything written.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible under its key, failing if the key exists.
    fn commit(self: Box<Self>) -> Result<(), StorageError>;
}

/// A snapshot destination.
pub trait Storage: Send + Sync {
    /// The destination as the user would write it, for messages.
    fn url(&self) -> String;
    /// Every object whose key starts with `prefix` (`""` for all).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    /// Starts writing a new object under `key`; `meta` describes the image it will hold.
    fn create(&self, key: &str, meta: &ObjectMeta) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Opens an object for streaming reads.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError>;
    /// Deletes `keys`, returning each key that could not be deleted and why.
    fn delete(&self, keys: &[String]) -> Vec<(String, StorageError)>;
    /// What the backend recorded beside the object when it was created, for a check that
    /// does not trust the object's own content; `None` when it keeps no such record.
    fn image_meta(&self, _key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        Ok(None)
    }
}

/// Checks that `dest` names a destination sqlbak can use (a plain path, a `file://` URL
/// with an absolute path, or a well-formed `s3://` URL) without touching it, so that a
/// mistyped destination is reported as such before any work is done.
pub fn check_destination(dest: &str) -> Result<(), StorageError> {
    parse(dest).map(|_| ())
}

/// Opens the destination named by `dest`: a plain path, a `file://` URL or an `s3://` URL.
/// Only a malformed `dest` fails with [`StorageError::BadDestination`] here; whether the
/// destination exists or answers is found out by the first request.
pub fn open(dest: &str) -> Result<Box<dyn Storage>, StorageError> {
    Ok(match parse(dest)? {
        Destination::Local(root) => Box::new(local::LocalStorage::new(root)),
        Destination::S3 => Box::new(s3::S3Storage::open(dest)?),
    })
}

/// What a destination string names, once its syntax has been checked.
enum Destination {
    Local(PathBuf),
    S3,
}

fn parse(dest: &str) -> Result<Destination, StorageError> {
    let bad = |why: String| StorageError::BadDestination(dest.into(), why);
    if let Some(rest) = dest.strip_prefix("file://") {
        if rest.is_empty() || !rest.starts_with('/') {
            return Err(bad(
                "a file:// URL needs an absolute path, e.g. file:///var/backups".into(),
            ));
        }
        return Ok(Destination::Local(PathBuf::from(rest)));
    }
    if dest.starts_with("s3://") {
        s3::S3Location::parse(dest).map_err(bad)?;
        return Ok(Destination::S3);
    }
    if let Some((scheme, _)) = dest.split_once("://") {
        return Err(bad(format!(
            "unknown scheme {scheme}://; use a directory path, file:///path or s3://bucket/prefix"
        )));
    }
    if dest.is_empty() {
        return Err(bad(
            "the destination is empty; pass --dest or set dest in the config".into(),
        ));
    }
    Ok(Destination::Local(PathBuf::from(dest)))
}
