//! Facts about this host and its processes, used to name temporaries so that a later run
//! can tell a dead run's leftovers from a live run's work in progress.
//!
//! A temporary's name carries a tag, `<host>-<owner>-<random>`, after a prefix that says
//! which kind of temporary it is. `<owner>` is `<pid>.<start>.<boot>` where the kernel
//! tells when the process started: `<start>` is its start time in clock ticks after boot
//! (field 22 of `/proc/<pid>/stat`) and `<boot>` the first 8 hex digits of
//! `/proc/sys/kernel/random/boot_id`. A pid alone is not enough: in a container every run
//! is pid 1, and any pid is reused sooner or later, so a crashed run's temporary would look
//! alive. Without `/proc` the owner is the bare `<pid>`, which is also what older versions
//! wrote; such tags keep the old rule (stale once no process has that pid).

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
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

/// Length of the random part at the end of every temporary's tag; a tag with any other
/// random part is not one of ours and is never removed.
pub const TEMP_RAND_LEN: usize = 6;

/// Hex digits of the boot id kept in a tag: enough to tell boots apart, short enough for
/// file names.
const BOOT_ID_DIGITS: usize = 8;

/// When a process started, as the kernel counts it: which boot, and how many clock ticks
/// after it. Together with the pid this names one process, never a later one that reuses
/// the pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStart {
    /// The first [`BOOT_ID_DIGITS`] lowercase hex digits of the kernel's boot id.
    pub boot: String,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub ticks: u64,
}

/// The owner fields of a temporary's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempTag<'a> {
    /// Host that wrote it.
    pub host: &'a str,
    /// Process id of the writer, on that host.
    pub pid: i32,
    /// When the writer started; `None` for tags written without `/proc` (or by sqlbak
    /// versions that did not record it).
    pub start: Option<ProcessStart>,
}

/// What this host can tell about a pid now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No process has this pid.
    Dead,
    /// A process has this pid; its start time in clock ticks after boot, when readable.
    Alive(Option<u64>),
}

/// The start time (field 22, clock ticks after boot) in the text of a `/proc/<pid>/stat`
/// file. The command name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat_starttime(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // after_comm starts with field 3 (state); field 22 is 19 fields later.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The short form of `/proc/sys/kernel/random/boot_id` (a UUID) that tags record.
pub fn parse_boot_id(raw: &str) -> Option<String> {
    let hex: String = raw
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .take(BOOT_ID_DIGITS)
        .collect();
    (hex.len() == BOOT_ID_DIGITS && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a tag `<host>-<owner>-<random>` into its owner fields; `None` for anything that
/// is not exactly that shape (such a name is never treated as ours).
pub fn parse_tag(tag: &str) -> Option<TempTag<'_>> {
    let mut parts = tag.rsplitn(3, '-');
    let (rand, owner, host) = (parts.next()?, parts.next()?, parts.next()?);
    if host.is_empty()
        || rand.len() != TEMP_RAND_LEN
        || !rand.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let mut fields = owner.split('.');
    let pid = fields
        .next()
        .filter(|p| is_digits(p))?
        .parse::<i32>()
        .ok()?;
    if pid <= 0 {
        return None;
    }
    let start = match (fields.next(), fields.next(), fields.next()) {
        (None, _, _) => None,
        (Some(ticks), Some(boot), None)
            if is_digits(ticks)
                && boot.len() == BOOT_ID_DIGITS
                && boot.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(ProcessStart {
                boot: boot.to_ascii_lowercase(),
                ticks: ticks.parse().ok()?,
            })
        }
        _ => return None,
    };
    Some(TempTag { host, pid, start })
}

/// Decides whether the writer named by `tag` is gone, given what this host says about
/// itself (`this_boot`: the short boot id, `None` without `/proc`) and about pids
/// (`probe`), and how long ago the temporary was last modified.
///
/// - Another host's: stale once older than [`FOREIGN_TEMP_MAX_AGE`].
/// - This host's, with a start time: stale when it is from an earlier boot, when no
///   process has the pid, or when the process with that pid started at another time.
///   When the start time of a live pid cannot be read, it is kept.
/// - This host's without a start time (old names, or no `/proc` here): stale when no
///   process has the pid.
pub fn owner_is_gone(
    tag: &TempTag<'_>,
    this_host: &str,
    this_boot: Option<&str>,
    probe: impl Fn(i32) -> Liveness,
    age: Option<Duration>,
) -> bool {
    if tag.host != this_host {
        return age.is_some_and(|a| a > FOREIGN_TEMP_MAX_AGE);
    }
    let liveness = probe(tag.pid);
    match (&tag.start, this_boot) {
        (Some(start), Some(boot)) => {
            if start.boot != boot {
                return true;
            }
            match liveness {
                Liveness::Dead => true,
                Liveness::Alive(Some(ticks)) => ticks != start.ticks,
                Liveness::Alive(None) => false,
            }
        }
        _ => liveness == Liveness::Dead,
    }
}

/// Whether `pid` runs on this host and, if `/proc` says, when it started.
pub fn probe_process(pid: i32) -> Liveness {
    if !process_alive(pid) {
        return Liveness::Dead;
    }
    let ticks = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_starttime(&s));
    Liveness::Alive(ticks)
}

/// This boot's short id, `None` without `/proc`.
fn this_boot() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|raw| parse_boot_id(&raw))
    })
    .as_deref()
}

/// When this process started, `None` without `/proc`.
fn this_process_start() -> Option<&'static ProcessStart> {
    static START: OnceLock<Option<ProcessStart>> = OnceLock::new();
    START
        .get_or_init(|| {
            let boot = this_boot()?.to_string();
            let stat = fs::read_to_string("/proc/self/stat").ok()?;
            let ticks = parse_stat_starttime(&stat)?;
            Some(ProcessStart { boot, ticks })
        })
        .as_ref()
}

/// The start of a tag naming this process, `<host>-<owner>-`: a temporary's name is a
/// kind-specific prefix, this, and [`TEMP_RAND_LEN`] random characters.
pub fn temp_tag_prefix() -> String {
    let pid = std::process::id();
    match this_process_start() {
        Some(s) => format!("{}-{pid}.{}.{}-", hostname(), s.ticks, s.boot),
        None => format!("{}-{pid}-", hostname()),
    }
}

/// Decides whether a temporary with this tag belongs to a run that is gone (see
/// [`owner_is_gone`]); a tag that does not parse is never stale.
pub fn temp_is_stale(tag: &str, modified: Option<SystemTime>, this_host: &str) -> bool {
    let Some(tag) = parse_tag(tag) else {
        return false;
    };
    let age = modified.and_then(|m| m.elapsed().ok());
    owner_is_gone(&tag, this_host, this_boot(), probe_process, age)
}

/// Removes the entries of `dir` that `tag_of` recognises as temporaries (returning their
/// `<host>-<owner>-<random>` tag) and that [`temp_is_stale`] says belong to a dead run.
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

    const BOOT: &str = "5f1c9a3e";

    fn start(ticks: u64) -> Option<ProcessStart> {
        Some(ProcessStart {
            boot: BOOT.into(),
            ticks,
        })
    }

    #[test]
    fn starttime_is_field_22_even_with_odd_command_names() {
        let rest = "S 0 0 0 0 -1 4194560 49850 322883047 0 59634 809 4366 1369104 182185 10 -10 \
13 0 22 40333312 2573";
        assert_eq!(parse_stat_starttime(&format!("1 (init) {rest}")), Some(22));
        assert_eq!(
            parse_stat_starttime(&format!("4242 (a) b (c)) {rest}\n")),
            Some(22)
        );
        assert_eq!(parse_stat_starttime("4242 (cut) S 1 2 3"), None);
        assert_eq!(parse_stat_starttime("no parenthesis at all"), None);
    }

    #[test]
    fn boot_ids() {
        assert_eq!(
            parse_boot_id("5F1C9A3E-0b7d-4c2e-9a61-3e8f2d4b7c10\n").as_deref(),
            Some(BOOT)
        );
        assert_eq!(parse_boot_id("5f1c-9a3e"), Some(BOOT.into()));
        assert_eq!(parse_boot_id("xyz"), None);
        assert_eq!(parse_boot_id(""), None);
    }

    #[test]
    fn tags_old_and_new() {
        assert_eq!(
            parse_tag("web-1.example-4242-aB3dE9"),
            Some(TempTag {
                host: "web-1.example",
                pid: 4242,
                start: None
            })
        );
        assert_eq!(
            parse_tag("web-1-1.987654.5F1C9A3E-aB3dE9"),
            Some(TempTag {
                host: "web-1",
                pid: 1,
                start: start(987654)
            })
        );
        for bad in [
            "garbage",
            "h-1-abc",              // random part too short
            "h-1-abcdefg",          // too long
            "h-1-abc.de",           // not alphanumeric
            "-1-abcdef",            // no host
            "h-0-abcdef",           // no such pid
            "h-+1-abcdef",          // not digits
            "h-99999999999-abcdef", // beyond i32
            "h-1.2-abcdef",         // start without boot
            "h-1.2.5f1c-abcdef",    // short boot
            "h-1.2.zzzzzzzz-abcdef",
            "h-1.2.5f1c9a3e.x-abcdef",
            "h-1..5f1c9a3e-abcdef",
        ] {
            assert_eq!(parse_tag(bad), None, "{bad}");
        }
    }

    fn gone(tag: &str, boot: Option<&str>, probe: Liveness) -> bool {
        let tag = parse_tag(tag).unwrap();
        owner_is_gone(&tag, "h", boot, |_| probe, None)
    }

    #[test]
    fn the_start_time_tells_a_reused_pid_from_its_owner() {
        let tag = "h-1.500.5f1c9a3e-abcdef";
        // Pid 1 again, but started at another time: a container restarted, or a pid reused.
        assert!(gone(tag, Some(BOOT), Liveness::Alive(Some(700))));
        assert!(!gone(tag, Some(BOOT), Liveness::Alive(Some(500))));
        assert!(gone(tag, Some(BOOT), Liveness::Dead));
        // Alive, start unreadable (e.g. /proc mounted hidepid): keep.
        assert!(!gone(tag, Some(BOOT), Liveness::Alive(None)));
        // Written before the last reboot: no process of that boot is left.
        assert!(gone(tag, Some("00000000"), Liveness::Alive(Some(500))));
        // No /proc here now: the pid rule.
        assert!(!gone(tag, None, Liveness::Alive(Some(700))));
        assert!(gone(tag, None, Liveness::Dead));
    }

    #[test]
    fn old_tags_keep_the_pid_rule() {
        let tag = "h-1-abcdef";
        assert!(!gone(tag, Some(BOOT), Liveness::Alive(Some(700))));
        assert!(!gone(tag, Some(BOOT), Liveness::Alive(None)));
        assert!(gone(tag, Some(BOOT), Liveness::Dead));
    }

    #[test]
    fn another_hosts_tag_waits_for_age() {
        let tag = parse_tag("other-host-1.5.5f1c9a3e-abcdef").unwrap();
        let probe = |_| panic!("another host's pid is never looked up here");
        let old = Some(Duration::from_secs(25 * 3600));
        let fresh = Some(Duration::from_secs(60));
        assert!(owner_is_gone(&tag, "h", Some(BOOT), probe, old));
        assert!(!owner_is_gone(&tag, "h", Some(BOOT), probe, fresh));
        assert!(!owner_is_gone(&tag, "h", Some(BOOT), probe, None));
    }

    #[test]
    fn this_process_is_alive_and_its_tag_names_it() {
        let prefix = temp_tag_prefix();
        let tag = format!("{prefix}abcdef");
        let parsed = parse_tag(&tag).unwrap();
        assert_eq!(parsed.pid, std::process::id() as i32);
        assert!(!temp_is_stale(&tag, None, &hostname()));
        if cfg!(target_os = "linux") {
            let start = parsed.start.expect("a start time on Linux");
            assert_eq!(
                probe_process(parsed.pid),
                Liveness::Alive(Some(start.ticks))
            );
            // The same pid with another start time is someone else's.
            let other = format!(
                "{}-{}.{}.{}-abcdef",
                hostname(),
                parsed.pid,
                start.ticks + 1,
                start.boot
            );
            assert!(temp_is_stale(&other, None, &hostname()));
        }
    }

    #[test]
    fn dead_pid_on_this_host_is_stale() {
        // Pid numbers above the kernel's maximum never exist.
        assert!(temp_is_stale("h-2147483000-abcdef", None, "h"));
        assert!(!temp_is_stale("h-2147483000-abc", None, "h"));
    }
}
