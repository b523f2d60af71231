//! Facts about this host and its processes, used to name temporaries so that a later run
//! can tell a dead run's leftovers from a live run's work in progress.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// This host's name, or `unknown-host` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Whether a process with this pid exists on this host (a pid we may not signal still
/// counts as alive).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// A temporary left behind by another host is only removed once it is this old, since
/// we cannot ask that host whether its writer is still running.
pub const FOREIGN_TEMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Decides whether a temporary named `<prefix><host>-<pid>-<random>` belongs to a run
/// that is gone: same host and the pid is dead, or another host's and older than
/// [`FOREIGN_TEMP_MAX_AGE`].
pub fn temp_is_stale(tag: &str, modified: Option<SystemTime>, this_host: &str) -> bool {
    let mut parts = tag.rsplitn(3, '-');
    let (_rand, pid, host) = match (parts.next(), parts.next(), parts.next()) {
        (Some(r), Some(p), Some(h)) => (r, p, h),
        _ => return false,
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if host == this_host {
        return !process_alive(pid);
    }
    modified
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > FOREIGN_TEMP_MAX_AGE)
}

/// Removes the entries of `dir` that `tag_of` recognises as temporaries (returning their
/// `<host>-<pid>-<random>` tag) and that [`temp_is_stale`] says belong to a dead run.
/// Failures are logged: cleaning up is never worth failing a run for.
pub fn remove_stale_temporaries(dir: &Path, tag_of: impl Fn(&str) -> Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let this_host = hostname();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(tag) = name.to_str().and_then(&tag_of) else {
            continue;
        };
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        if !temp_is_stale(tag, modified, &this_host) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::info!("removed stale temporary {}", path.display()),
            Err(e) => tracing::warn!("cannot remove stale temporary {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_live_process_is_not_stale() {
        let me = std::process::id();
        assert!(!temp_is_stale(&format!("h-{me}-abc"), None, "h"));
    }

    #[test]
    fn dead_pid_on_this_host_is_stale() {
        // Pid numbers above the kernel's maximum never exist.
        assert!(temp_is_stale("h-2147483000-abc", None, "h"));
    }

    #[test]
    fn foreign_host_waits_for_age() {
        let old = SystemTime::now() - Duration::from_secs(25 * 3600);
        let fresh = SystemTime::now();
        assert!(temp_is_stale("other-host-1-abc", Some(old), "h"));
        assert!(!temp_is_stale("other-host-1-abc", Some(fresh), "h"));
        assert!(!temp_is_stale("garbage", Some(old), "h"));
    }
}
