//! The config file: many databases in one run, defaults and overrides, strict keys.

mod common;

use common::*;
use std::fs;
use tempfile::TempDir;

#[test]
fn snapshot_every_configured_database_and_read_back() {
    let dir = TempDir::new().unwrap();
    let main_dest = dir.path().join("backups");
    let other_dest = dir.path().join("other-backups");
    let app = dir.path().join("app.db");
    let other = dir.path().join("other.sqlite");
    make_db(&app, "wal", 20);
    make_db(&other, "delete", 30);
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\nlevel = 1\n\n[[databases]]\npath = {:?}\nname = \"main-app\"\n\n[[databases]]\npath = {:?}\ndest = {:?}\nmethod = \"vacuum\"\n",
            main_dest.display().to_string(),
            app.display().to_string(),
            other.display().to_string(),
            other_dest.display().to_string(),
        ),
    )
    .unwrap();

    // SQLBAK_CONFIG names the default config file.
    let out = sqlbak()
        .env("SQLBAK_CONFIG", &config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let taken = json(&out);
    assert_eq!(taken.as_array().unwrap().len(), 2);
    assert_eq!(snapshot_files(&main_dest).len(), 1);
    assert!(
        snapshot_files(&main_dest)[0]
            .to_str()
            .unwrap()
            .contains("/main-app/main-app-")
    );
    assert_eq!(snapshot_files(&other_dest).len(), 1);

    // --name picks one configured database.
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--name", "other"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_files(&other_dest).len(), 2);
    assert_eq!(snapshot_files(&main_dest).len(), 1);

    // list without --dest reads every configured destination.
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out).as_array().unwrap().len(), 3);

    // restore by name finds the destination and refuses to clobber the live database.
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["restore", "--name", "main-app"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );
    let target = dir.path().join("copy.db");
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["restore", "--name", "main-app", "-o"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sqlite(&target, "SELECT count(*) FROM t"), "20");

    // verify walks every destination.
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .args(["verify", "--all", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out).as_array().unwrap().len(), 3);
}

#[test]
fn unknown_keys_are_rejected_with_the_key_and_file() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        "dest = \"/tmp/x\"\n[[databases]]\npath = \"/a.db\"\ndset = \"/typo\"\n",
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`dset`") && err.contains(&config.display().to_string()),
        "{err}"
    );
}

#[test]
fn missing_or_broken_config_is_a_usage_error() {
    let dir = TempDir::new().unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(dir.path().join("nope.toml"))
        .arg("snapshot")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));
    let config = dir.path().join("bad.toml");
    fs::write(&config, "level = \"high\"\n").unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let config = dir.path().join("empty.toml");
    fs::write(&config, "dest = \"/tmp\"\n").unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "no databases: nothing to do");
}

#[test]
fn one_failing_database_does_not_stop_the_others() {
    let dir = TempDir::new().unwrap();
    let dest = dir.path().join("backups");
    let good = dir.path().join("good.db");
    make_db(&good, "wal", 5);
    let config = dir.path().join("sqlbak.toml");
    fs::write(
        &config,
        format!(
            "dest = {:?}\n[[databases]]\npath = \"/nonexistent/missing.db\"\n[[databases]]\npath = {:?}\n",
            dest.display().to_string(),
            good.display().to_string()
        ),
    )
    .unwrap();
    let out = sqlbak()
        .arg("--config")
        .arg(&config)
        .arg("snapshot")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing.db does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        snapshot_files(&dest).len(),
        1,
        "the good database was still backed up"
    );
}
