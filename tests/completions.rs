//! `sqlbak completions SHELL` prints a script for every shell clap_complete supports.

mod common;

use common::*;

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = sqlbak().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.len() > 500, "{shell}: too short:\n{script}");
        for sub in [
            "snapshot",
            "list",
            "restore",
            "verify",
            "prune",
            "completions",
        ] {
            assert!(script.contains(sub), "{shell}: no mention of {sub}");
        }
        assert!(script.contains("age-recipient"), "{shell}: flags missing");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = sqlbak().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bash"), "{}", stderr(&out));
}

#[test]
fn a_broken_config_does_not_stop_completions() {
    let out = sqlbak()
        .env("SQLBAK_CONFIG", "/nonexistent/sqlbak.toml")
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
