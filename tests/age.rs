//! age encryption through the binary, checked against the real `age` tool both ways.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tempfile::TempDir;

/// A new age identity file (0600) and its public key, made by the real age-keygen.
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("age-keygen must be installed (apt-get install age)");
    assert!(status.success());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// A new unencrypted SSH key pair of `kind` (ed25519 or rsa): (private key path, public key line).
fn ssh_key(dir: &Path, kind: &str) -> (PathBuf, String) {
    let path = dir.join(format!("id_{kind}"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "test", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen must be installed (apt-get install openssh-client)");
    assert!(status.success());
    let public = fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

struct Setup {
    dir: TempDir,
    db: PathBuf,
    dest: PathBuf,
}

fn setup() -> Setup {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db, "wal", 300);
    sqlite(
        &db,
        "CREATE TABLE secret_customers(card TEXT); INSERT INTO secret_customers VALUES ('4111-1111-1111-1111');",
    );
    let dest = dir.path().join("backups");
    Setup { dir, db, dest }
}

fn snapshot_to(s: &Setup, extra: &[&str]) -> std::process::Output {
    sqlbak()
        .args(["snapshot", "--db"])
        .arg(&s.db)
        .arg("--dest")
        .arg(&s.dest)
        .args(extra)
        .output()
        .unwrap()
}

fn restore_with(s: &Setup, identity: Option<&Path>, out_path: &Path) -> std::process::Output {
    let mut cmd = sqlbak();
    cmd.args(["restore", "--name", "app", "--dest"])
        .arg(&s.dest)
        .arg("-o")
        .arg(out_path);
    if let Some(id) = identity {
        cmd.arg("--age-identity").arg(id);
    }
    cmd.output().unwrap()
}

fn assert_restored(path: &Path) {
    assert_eq!(sqlite(path, "PRAGMA integrity_check"), "ok");
    assert_eq!(
        sqlite(path, "SELECT card FROM secret_customers"),
        "4111-1111-1111-1111"
    );
    assert_eq!(sqlite(path, "SELECT count(*) FROM t"), "300");
}

#[test]
fn round_trip_one_recipient_and_age_cli_decrypts_it() {
    let s = setup();
    let (key, public) = age_key(s.dir.path(), "key.txt");
    let out = snapshot_to(&s, &["--age-recipient", &public]);
    assert!(out.status.success(), "{}", stderr(&out));

    let snaps = snapshot_files(&s.dest);
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].to_str().unwrap().ends_with(".sqlite3.gz.age"));
    let stored = fs::read(&snaps[0]).unwrap();
    assert!(
        stored.starts_with(b"age-encryption.org/v1\n"),
        "a standard binary age file"
    );
    for needle in [
        &b"SQLite format 3"[..],
        b"secret_customers",
        b"4111-1111",
        b"CREATE TABLE",
        b"sqlbak-meta",
    ] {
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "plaintext {:?} leaked",
            String::from_utf8_lossy(needle)
        );
    }

    let out = sqlbak()
        .args(["list", "--json", "--dest"])
        .arg(&s.dest)
        .output()
        .unwrap();
    assert_eq!(json(&out)[0]["encrypted"], true);

    // sqlbak restores it.
    let restored = s.dir.path().join("restored.db");
    let out = restore_with(&s, Some(&key), &restored);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_restored(&restored);

    // And so does `age -d | gzip -dc`, with no sqlbak at all.
    let plain = s.dir.path().join("plain.db");
    let mut age = Command::new("age")
        .args(["-d", "-i"])
        .arg(&key)
        .arg(&snaps[0])
        .stdout(Stdio::piped())
        .spawn()
        .expect("age must be installed");
    let gunzip = Command::new("gzip")
        .arg("-dc")
        .stdin(age.stdout.take().unwrap())
        .stdout(fs::File::create(&plain).unwrap())
        .status()
        .unwrap();
    assert!(age.wait().unwrap().success());
    assert!(gunzip.success());
    assert_restored(&plain);
}

#[test]
fn several_recipients_each_can_restore() {
    let s = setup();
    let (ops_key, ops) = age_key(s.dir.path(), "ops.txt");
    let (recovery_key, recovery) = age_key(s.dir.path(), "recovery.txt");
    let (ssh_private, ssh_public) = ssh_key(s.dir.path(), "ed25519");
    let recipients = s.dir.path().join("recipients.txt");
    fs::write(
        &recipients,
        format!("# offline recovery key\n{recovery}\n\n# ssh\n{ssh_public}\n"),
    )
    .unwrap();
    let out = snapshot_to(
        &s,
        &[
            "--age-recipient",
            &ops,
            "--age-recipients-file",
            recipients.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for (i, key) in [&ops_key, &recovery_key, &ssh_private].iter().enumerate() {
        let restored = s.dir.path().join(format!("r{i}.db"));
        let out = restore_with(&s, Some(key), &restored);
        assert!(
            out.status.success(),
            "identity {}: {}",
            key.display(),
            stderr(&out)
        );
        assert_restored(&restored);
    }
}

#[test]
fn ssh_rsa_recipient_round_trip() {
    let s = setup();
    let (private, public) = ssh_key(s.dir.path(), "rsa");
    let out = snapshot_to(&s, &["--age-recipient", &public]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = s.dir.path().join("r.db");
    let out = restore_with(&s, Some(&private), &restored);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_restored(&restored);
}

#[test]
fn restores_what_gzip_and_the_age_cli_made() {
    let s = setup();
    let (key, public) = age_key(s.dir.path(), "key.txt");
    let name_dir = s.dest.join("app");
    fs::create_dir_all(&name_dir).unwrap();
    let target = name_dir.join("app-20240101T000000Z.sqlite3.gz.age");
    let mut gzip = Command::new("gzip")
        .arg("-c")
        .arg(&s.db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new("age")
        .args(["-r", &public, "-o"])
        .arg(&target)
        .stdin(gzip.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(gzip.wait().unwrap().success());
    assert!(status.success());
    let restored = s.dir.path().join("r.db");
    let out = restore_with(&s, Some(&key), &restored);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_restored(&restored);
}

#[test]
fn wrong_missing_and_tampered_all_fail_without_output() {
    let s = setup();
    let (key, public) = age_key(s.dir.path(), "key.txt");
    let (other_key, _) = age_key(s.dir.path(), "other.txt");
    let out = snapshot_to(&s, &["--age-recipient", &public]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out_dir = s.dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("r.db");

    // No identity at all: a usage error naming the flag.
    let out = restore_with(&s, None, &target);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--age-identity"), "{}", stderr(&out));

    // The wrong identity.
    let out = restore_with(&s, Some(&other_key), &target);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("none of the identities") && err.contains("wrong key"),
        "{err}"
    );
    assert!(
        !err.contains("AGE-SECRET-KEY"),
        "no key material in errors: {err}"
    );

    // Tampered ciphertext.
    let snap = snapshot_files(&s.dest)[0].clone();
    let original = fs::read(&snap).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    fs::write(&snap, &bad).unwrap();
    let out = restore_with(&s, Some(&key), &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("modified, damaged"),
        "{}",
        stderr(&out)
    );

    // Truncated ciphertext.
    fs::write(&snap, &original[..original.len() - 100]).unwrap();
    let out = restore_with(&s, Some(&key), &target);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    // A header cut short.
    fs::write(&snap, &original[..40]).unwrap();
    let out = restore_with(&s, Some(&key), &target);
    assert_eq!(out.status.code(), Some(1));

    assert!(
        files_under(&out_dir).is_empty(),
        "no output and no temporary: {:?}",
        files_under(&out_dir)
    );

    // verify says the same, per snapshot.
    fs::write(&snap, &bad).unwrap();
    let out = sqlbak()
        .args(["verify", "--json", "--dest"])
        .arg(&s.dest)
        .arg("--age-identity")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)[0]["ok"], false);
}

#[test]
fn invalid_recipients_fail_before_any_work() {
    let s = setup();
    let out = snapshot_to(&s, &["--age-recipient", "age1definitelynotakey"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("recipient #1") && !err.contains("definitelynotakey"),
        "{err}"
    );
    assert!(!s.dest.exists(), "nothing was written");

    let out = snapshot_to(
        &s,
        &["--age-recipients-file", "/nonexistent/recipients.txt"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/recipients.txt"),
        "{}",
        stderr(&out)
    );
    assert!(!s.dest.exists());
}

#[test]
fn identity_from_env_and_config_with_permission_warning() {
    let s = setup();
    let (key, public) = age_key(s.dir.path(), "key.txt");
    let config = s.dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\nage_recipients = [{public:?}]\n[[databases]]\npath = {:?}\n",
            s.dest.display().to_string(),
            s.db.display().to_string()
        ),
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        snapshot_files(&s.dest)[0]
            .to_str()
            .unwrap()
            .ends_with(".age")
    );

    // SQLBAK_AGE_IDENTITY names the identity; a world-readable one gets a warning.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let restored = s.dir.path().join("r.db");
    let out = sqlbak()
        .env("SQLBAK_AGE_IDENTITY", &key)
        .args(["restore", "--name", "app", "--dest"])
        .arg(&s.dest)
        .arg("-o")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("readable by group or others"),
        "{}",
        stderr(&out)
    );
    assert_restored(&restored);

    // age_identity_file in the config.
    fs::write(
        &config,
        format!(
            "dest = {:?}\nage_identity_file = {:?}\n[[databases]]\npath = {:?}\n",
            s.dest.display().to_string(),
            key.display().to_string(),
            s.db.display().to_string()
        ),
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["verify", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)[0]["ok"], true);
}
