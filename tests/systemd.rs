//! The unit files under systemd/ pass `systemd-analyze verify` once the binary path points
//! at a real binary, and keep their hardening.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: &[&str] = &[
    "sqlbak.service",
    "sqlbak.timer",
    "sqlbak@.service",
    "sqlbak@.timer",
    "sqlbak-run.service",
];

fn unit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// Runs `systemd-analyze verify` on `units` inside `dir`; returns (success, output lines).
fn verify(dir: &Path, units: &[&str]) -> (bool, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.join(u)))
        .current_dir(dir)
        .output()
        .expect("systemd-analyze must be installed (apt-get install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        text.lines().map(str::to_string).collect(),
    )
}

/// Copies the units with `/usr/bin/sqlbak` replaced by the binary under test.
fn installed_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let text = fs::read_to_string(unit_dir().join(unit)).unwrap();
        if unit.ends_with(".service") {
            assert!(text.contains("ExecStart=/usr/bin/sqlbak "), "{unit}");
        }
        fs::write(
            dir.path().join(unit),
            text.replace("/usr/bin/sqlbak", env!("CARGO_BIN_EXE_sqlbak")),
        )
        .unwrap();
    }
    dir
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = installed_copy();
    let (ok, lines) = verify(dir.path(), UNITS);
    // Anything said about our units (unknown keys, bad values, missing commands) fails the
    // test, even where systemd-analyze itself only warns; other noise from the host is
    // tolerated.
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("sqlbak")).collect();
    assert!(
        ok && ours.is_empty(),
        "systemd-analyze verify:\n{}",
        lines.join("\n")
    );
}

#[test]
fn verify_would_catch_a_broken_unit() {
    // Proves the check above has teeth in this environment.
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("sqlbak-broken.service"),
        "[Service]\nType=oneshot\nExecStart=/nonexistent/sqlbak snapshot\nProtectSystem=strictly\n",
    )
    .unwrap();
    let (_, lines) = verify(dir.path(), &["sqlbak-broken.service"]);
    let text = lines.join("\n");
    assert!(
        text.contains("sqlbak-broken.service:4") && text.contains("/nonexistent/sqlbak"),
        "{text}"
    );
}

#[test]
fn units_are_hardened_and_scheduled_as_documented() {
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let text = fs::read_to_string(unit_dir().join(unit)).unwrap();
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallFilter=@system-service",
        ] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
        // Pings and S3 need the network.
        assert!(!text.contains("PrivateNetwork=yes"), "{unit}");
    }
    for timer in ["sqlbak.timer", "sqlbak@.timer"] {
        let text = fs::read_to_string(unit_dir().join(timer)).unwrap();
        assert!(text.contains("Persistent=true") && text.contains("RandomizedDelaySec="));
    }
    let oneshot = fs::read_to_string(unit_dir().join("sqlbak.service")).unwrap();
    assert!(oneshot.contains("Type=oneshot"));
    assert!(oneshot.contains("ExecStart=/usr/bin/sqlbak snapshot --config /etc/sqlbak.toml"));
    let template = fs::read_to_string(unit_dir().join("sqlbak@.service")).unwrap();
    assert!(template.contains("--config /etc/sqlbak/%i.toml"));
    let daemon = fs::read_to_string(unit_dir().join("sqlbak-run.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/sqlbak run --config /etc/sqlbak.toml",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(daemon.contains(line), "sqlbak-run.service lacks {line}");
    }
}
