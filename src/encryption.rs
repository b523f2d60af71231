//! age encryption, both directions, streaming: compressed snapshots are encrypted to
//! public recipients on the way out and decrypted with identity files on the way back.
//! The output is a standard binary age file, so `age -d -i key.txt snap.sqlite3.gz.age |
//! gzip -dc` restores a snapshot without sqlbak.
//!
//! Key material never appears in messages: a bad recipient is named by its position, a
//! bad line of a file by its line number.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why encryption or decryption could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// A recipient given on the command line or in the config does not parse.
    #[error(
        "age recipient #{index} is not a valid recipient; use an age public key (age1…) or an SSH public key (ssh-ed25519 …, ssh-rsa …)"
    )]
    BadRecipient {
        /// 1-based position among the given recipients.
        index: usize,
    },
    /// A line of a recipients file does not parse.
    #[error(
        "line {line} of recipients file {file} is not a valid recipient; each line must be an age public key (age1…) or an SSH public key, or a # comment"
    )]
    BadRecipientLine {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A recipients file with no recipients would encrypt to nobody.
    #[error("recipients file {0} lists no recipients")]
    EmptyRecipientsFile(PathBuf),
    /// An identity file that cannot be used.
    #[error("identity file {file}: {reason}")]
    BadIdentity {
        /// The file.
        file: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {file}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// None of the identities matches any recipient of the file.
    #[error("none of the identities in {0} can decrypt this snapshot (wrong key?)")]
    NoMatchingKey(PathBuf),
    /// The header is not an age header, or was modified.
    #[error("the snapshot is not a valid age file or its header was modified: {0}")]
    BadHeader(String),
    /// The source failed to deliver the header: says nothing about the snapshot itself.
    #[error("cannot read the snapshot from storage")]
    ReadSnapshot(#[source] io::Error),
}

/// The public keys snapshots are encrypted to.
pub struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send + Sync>>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients({} keys)", self.keys.len())
    }
}

fn parse_recipient(text: &str) -> Option<Box<dyn age::Recipient + Send + Sync>> {
    if let Ok(r) = text.parse::<age::x25519::Recipient>() {
        return Some(Box::new(r));
    }
    text.parse::<age::ssh::Recipient>()
        .ok()
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send + Sync>)
}

impl Recipients {
    /// Parses recipients from strings and an optional recipients file (one per line,
    /// `#` comments and blank lines ignored, as the age tool's `-R`). Fails before any
    /// work is done if any of them is invalid.
    pub fn parse(strings: &[String], file: Option<&Path>) -> Result<Recipients, EncryptionError> {
        let mut keys = Vec::new();
        for (i, s) in strings.iter().enumerate() {
            keys.push(
                parse_recipient(s.trim()).ok_or(EncryptionError::BadRecipient { index: i + 1 })?,
            );
        }
        if let Some(path) = file {
            let read_err = |source| EncryptionError::Read {
                file: path.to_path_buf(),
                source,
            };
            let reader = BufReader::new(fs::File::open(path).map_err(read_err)?);
            let before = keys.len();
            for (n, line) in reader.lines().enumerate() {
                let line = line.map_err(read_err)?;
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(parse_recipient(line).ok_or_else(|| {
                    EncryptionError::BadRecipientLine {
                        file: path.to_path_buf(),
                        line: n + 1,
                    }
                })?);
            }
            if keys.len() == before {
                return Err(EncryptionError::EmptyRecipientsFile(path.to_path_buf()));
            }
        }
        Ok(Recipients { keys })
    }

    /// Whether there is anyone to encrypt to (if not, snapshots stay plain gzip).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Wraps `output` so that everything written is encrypted; call `finish()` on the
    /// result to write the final chunk.
    pub fn encrypt<W: Write>(&self, output: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor = age::Encryptor::with_recipients(
            self.keys.iter().map(|k| k.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| io::Error::other(format!("cannot start age encryption: {e}")))?;
        encryptor.wrap_output(output)
    }
}

/// The private keys snapshots are decrypted with, loaded from one identity file.
pub struct Identities {
    file: PathBuf,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    /// Loads an age identity file (`AGE-SECRET-KEY-1…` lines) or an unencrypted SSH
    /// private key, warning when it is readable by group or others.
    pub fn load(path: &Path) -> Result<Identities, EncryptionError> {
        let bad = |reason: &str| EncryptionError::BadIdentity {
            file: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let meta = fs::metadata(path).map_err(|source| EncryptionError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "identity file {} is readable by group or others; restrict it with `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        let data = fs::read(path).map_err(|source| EncryptionError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8_lossy(&data);
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if text.contains("PRIVATE KEY-----") {
            match age::ssh::Identity::from_buffer(&data[..], Some(path.display().to_string())) {
                Ok(age::ssh::Identity::Unencrypted(k)) => {
                    vec![Box::new(age::ssh::Identity::Unencrypted(k))]
                }
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    return Err(bad(
                        "the SSH key is passphrase-protected, which cannot work unattended; use an unencrypted key kept private (chmod 600) or an age identity (age-keygen)",
                    ));
                }
                Ok(age::ssh::Identity::Unsupported(_)) => {
                    return Err(bad(
                        "this kind of SSH key is not supported by age; use ssh-ed25519 or ssh-rsa",
                    ));
                }
                Err(_) => return Err(bad("not a valid SSH private key")),
            }
        } else {
            age::IdentityFile::from_buffer(&data[..])
                .ok()
                .and_then(|f| f.into_identities().ok())
                .ok_or_else(|| {
                    bad("not a valid age identity file (expected AGE-SECRET-KEY-1… lines, as written by age-keygen)")
                })?
        };
        if keys.is_empty() {
            return Err(bad("it holds no identities"));
        }
        Ok(Identities {
            file: path.to_path_buf(),
            keys,
        })
    }

    /// Starts decrypting `input`; the header is checked and the file key unwrapped
    /// here, the payload is authenticated chunk by chunk as it is read.
    pub fn decrypt<R: Read>(&self, input: R) -> Result<impl Read + use<R>, EncryptionError> {
        use age::DecryptError as E;
        let decryptor = age::Decryptor::new(input).map_err(|e| match e {
            E::Io(io) => match io.kind() {
                io::ErrorKind::UnexpectedEof => {
                    EncryptionError::BadHeader("it ends inside the age header (truncated)".into())
                }
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                    EncryptionError::BadHeader(io.to_string())
                }
                _ => EncryptionError::ReadSnapshot(io),
            },
            other => EncryptionError::BadHeader(other.to_string()),
        })?;
        let reader = decryptor
            .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                E::NoMatchingKeys => EncryptionError::NoMatchingKey(self.file.clone()),
                other => EncryptionError::BadHeader(other.to_string()),
            })?;
        Ok(PayloadReader { inner: reader })
    }
}

/// Rewords the age stream's payload errors so the user learns what they mean.
struct PayloadReader<R> {
    inner: R,
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the encrypted payload ends early (truncated age file)",
            ),
            io::ErrorKind::InvalidData => io::Error::new(
                io::ErrorKind::InvalidData,
                "age authentication failed: the encrypted snapshot was modified, damaged or truncated",
            ),
            _ => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_string(),
        )
    }

    #[test]
    fn round_trip_and_wrong_key() {
        let (public, secret) = keypair();
        let (_, other_secret) = keypair();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.txt");
        fs::write(&key_file, format!("# test\n{secret}\n")).unwrap();
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
        let recipients = Recipients::parse(&[public], None).unwrap();
        let mut sealed = Vec::new();
        let mut w = recipients.encrypt(&mut sealed).unwrap();
        w.write_all(b"hello gzip bytes").unwrap();
        w.finish().unwrap();
        let ids = Identities::load(&key_file).unwrap();
        let mut plain = Vec::new();
        ids.decrypt(&sealed[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"hello gzip bytes");

        let wrong = dir.path().join("wrong.txt");
        fs::write(&wrong, &other_secret).unwrap();
        let err = Identities::load(&wrong)
            .unwrap()
            .decrypt(&sealed[..])
            .err()
            .unwrap();
        assert!(matches!(err, EncryptionError::NoMatchingKey(_)), "{err}");
        assert!(!err.to_string().contains("AGE-SECRET"));
    }

    #[test]
    fn bad_recipients_are_named_without_their_content() {
        let err = Recipients::parse(&["age1notakey".into()], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("#1") && !err.contains("age1notakey"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.txt");
        let (public, _) = keypair();
        fs::write(
            &file,
            format!("# ops\n{public}\n\nsecret-looking-garbage\n"),
        )
        .unwrap();
        let err = Recipients::parse(&[], Some(&file)).unwrap_err().to_string();
        assert!(err.contains("line 4") && !err.contains("garbage"), "{err}");
        fs::write(&file, "# nothing\n\n").unwrap();
        assert!(matches!(
            Recipients::parse(&[], Some(&file)),
            Err(EncryptionError::EmptyRecipientsFile(_))
        ));
    }

    #[test]
    fn bad_identity_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("id.txt");
        fs::write(&file, "AGE-SECRET-KEY-1NOTREALLY\n").unwrap();
        let err = Identities::load(&file).err().unwrap().to_string();
        assert!(
            err.contains("not a valid age identity") && !err.contains("NOTREALLY"),
            "{err}"
        );
        assert!(Identities::load(&dir.path().join("missing")).is_err());
    }
}
