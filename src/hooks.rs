//! `on_success` / `on_failure` hooks: a shell command run after a job, told what happened
//! through `SQLBAK_*` environment variables.
//!
//! A hook reports on a job; it can never change the job's result. Its own failure, or a
//! hook that outlives [`HOOK_TIMEOUT`] (its whole process group is then terminated), is
//! only a warning. Its stdout goes to sqlbak's stderr, so `--json` output stays clean and
//! cron still mails what it prints.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a hook may run before it is terminated.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a hook gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Every variable a hook may be given; all are cleared first so that none leaks in from
/// sqlbak's own environment.
pub const VARIABLES: &[&str] = &[
    "SQLBAK_STATUS",
    "SQLBAK_NAME",
    "SQLBAK_DB",
    "SQLBAK_DEST",
    "SQLBAK_KEY",
    "SQLBAK_SIZE",
    "SQLBAK_DURATION",
    "SQLBAK_ERROR",
];

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// `sh` could not be started.
    #[error("cannot start `sh -c`: {0}")]
    Spawn(#[source] io::Error),
    /// Waiting for it failed.
    #[error("cannot wait for it: {0}")]
    Wait(#[source] io::Error),
    /// It exited non-zero or was killed by a signal.
    #[error("it failed ({0})")]
    Failed(ExitStatus),
    /// It ran too long and was terminated.
    #[error("it was still running after {} and was terminated", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

/// Runs `command` with `sh -c`, the `SQLBAK_*` variables in `vars` (others cleared),
/// stdin closed and stdout sent to stderr, in its own process group; terminates the group
/// after `timeout`.
pub fn run(command: &str, vars: &[(&str, String)], timeout: Duration) -> Result<(), HookError> {
    let stdout = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(stdout)
        .process_group(0);
    for var in VARIABLES {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().map_err(HookError::Spawn)?;
    let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(HookError::Failed(status)),
            Ok(None) => {}
            Err(e) => {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait();
                return Err(HookError::Wait(e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - now));
    }
    // Timed out: ask the whole group to stop, then insist.
    let _ = killpg(group, Signal::SIGTERM);
    let grace = Instant::now() + KILL_GRACE;
    while Instant::now() < grace {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The group may outlive its leader (a backgrounded child), so always send SIGKILL.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    Err(HookError::TimedOut(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn variables_reach_the_command_and_absent_ones_are_unset() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let cmd = format!(
            "printf '%s|%s' \"$SQLBAK_NAME\" \"${{SQLBAK_ERROR-unset}}\" > '{}'",
            out.display()
        );
        run(&cmd, &vars(&[("SQLBAK_NAME", "app")]), HOOK_TIMEOUT).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "app|unset");
    }

    #[test]
    fn failures_are_reported_not_raised() {
        let err = run("exit 7", &[], HOOK_TIMEOUT).unwrap_err();
        assert!(matches!(err, HookError::Failed(s) if s.code() == Some(7)));
        assert!(err.to_string().contains('7'), "{err}");
    }

    #[test]
    fn a_hung_hook_and_its_children_are_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // A background grandchild that would keep running after sh is gone.
        let cmd = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
        let started = Instant::now();
        let err = run(&cmd, &[], Duration::from_millis(500)).unwrap_err();
        assert!(matches!(err, HookError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, the grandchild may linger as a zombie until something reaps it.
        let running = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
                .is_some_and(|r| !r.starts_with('Z'))
        };
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !running(pid)
        });
        assert!(gone, "the hook's background child {pid} survived");
    }
}
