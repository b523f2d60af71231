//! `sqlbak run`: a long-running scheduler for hosts and containers without cron.
//!
//! One thread waits for the earliest due time, a signal, or a finished run; each due
//! database runs on its own worker thread through the same path as `sqlbak snapshot`
//! ([`super::snapshot::run_one`]). A database file is never worked on by two runs at
//! once, even when two entries (say a local and an offsite destination) share it: the
//! second waits until the first is done. Fires that pass while a run is still going are
//! skipped, not queued.

use super::snapshot::{self, Job};
use super::{Env, rfc3339};
use crate::cli::{RunArgs, SnapshotArgs};
use crate::config::ConfigFile;
use crate::exit;
use crate::schedule::Schedule;
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// Never sleep longer than this, so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

enum Event {
    Signal(i32),
    Done(u64),
}

struct Entry {
    job: Job,
    schedule: Schedule,
    next: Option<DateTime<Utc>>,
}

/// One run in progress: which entry (by name and destination) and which database file.
struct Running {
    slot: (String, String),
    file: PathBuf,
}

/// Reports a run as finished when dropped, so a run that panics still frees its slot.
struct DoneGuard {
    id: u64,
    tx: Sender<Event>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Event::Done(self.id));
    }
}

fn slot(job: &Job) -> (String, String) {
    (job.name.clone(), job.opts.dest.clone())
}

fn file_of(job: &Job) -> PathBuf {
    std::fs::canonicalize(&job.path).unwrap_or_else(|_| job.path.clone())
}

/// Whether `job` must wait: it is running, or another run works on its database file.
fn blocked(running: &HashMap<u64, Running>, job: &Job) -> bool {
    let (slot, file) = (slot(job), file_of(job));
    running.values().any(|r| r.slot == slot || r.file == file)
}

fn load(env: &Env, args: &RunArgs) -> Result<Vec<Entry>> {
    let Some(cfg) = &env.config else {
        bail!(exit::usage(
            "sqlbak run needs --config FILE (or SQLBAK_CONFIG)"
        ));
    };
    let snapshot_args = SnapshotArgs {
        name: args.name.clone(),
        ..SnapshotArgs::default()
    };
    let now = Utc::now();
    let mut out = Vec::new();
    for job in snapshot::plan(env, &snapshot_args)? {
        match job.schedule.clone() {
            Some(schedule) => out.push(Entry {
                next: schedule.next_after(now),
                schedule,
                job,
            }),
            None => tracing::warn!(
                "{}: no schedule or interval in the config; not scheduled",
                job.name
            ),
        }
    }
    if out.is_empty() {
        bail!(exit::nothing(format!(
            "no database in {} has a schedule or interval",
            cfg.path.display()
        )));
    }
    for e in &out {
        match e.next {
            Some(next) => tracing::info!(
                "{}: scheduled {} (next {})",
                e.job.name,
                e.schedule,
                rfc3339(next)
            ),
            None => tracing::warn!("{}: {} never fires again", e.job.name, e.schedule),
        }
    }
    Ok(out)
}

/// Runs the scheduler until SIGTERM or SIGINT.
pub fn run(env: Env, args: &RunArgs) -> Result<()> {
    let mut env = Arc::new(env);
    let mut table = load(&env, args)?;
    let (tx, rx) = mpsc::channel::<Event>();

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let sig_tx = tx.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig_tx.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });

    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut next_id = 0u64;
    let mut stopping = false;
    loop {
        if stopping && running.is_empty() {
            tracing::info!("stopped");
            return Ok(());
        }
        let now = Utc::now();
        if !stopping {
            for e in table
                .iter_mut()
                .filter(|e| e.next.is_some_and(|n| n <= now))
            {
                if blocked(&running, &e.job) {
                    continue;
                }
                next_id += 1;
                running.insert(
                    next_id,
                    Running {
                        slot: slot(&e.job),
                        file: file_of(&e.job),
                    },
                );
                let guard = DoneGuard {
                    id: next_id,
                    tx: tx.clone(),
                };
                let job = e.job.clone();
                let env = Arc::clone(&env);
                tracing::info!("{}: starting snapshot", job.name);
                std::thread::spawn(move || {
                    let _guard = guard;
                    match snapshot::run_one(&env, &job) {
                        Ok(taken) => tracing::info!(
                            "{}: stored {} ({}, {:.1}s)",
                            taken.name,
                            taken.key,
                            indicatif::HumanBytes(taken.size),
                            taken.seconds
                        ),
                        Err(err) => tracing::error!("{}: snapshot failed: {err:#}", job.name),
                    }
                });
            }
        }
        // Wake for the earliest entry that can start; one waiting on a busy file is
        // woken by the Done event of the run it waits for.
        let wait = if stopping {
            MAX_SLEEP
        } else {
            table
                .iter()
                .filter(|e| !blocked(&running, &e.job))
                .filter_map(|e| e.next)
                .min()
                .map_or(MAX_SLEEP, |next| {
                    (next - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                })
                .min(MAX_SLEEP)
        };
        match rx.recv_timeout(wait) {
            Ok(Event::Signal(SIGHUP)) => match reload(&env, args) {
                Ok((new_env, new_table)) => {
                    env = Arc::new(new_env);
                    table = new_table;
                    tracing::info!("configuration reloaded");
                }
                Err(e) => {
                    tracing::error!("cannot reload the configuration, keeping the old one: {e:#}")
                }
            },
            Ok(Event::Signal(_)) if stopping => {
                tracing::warn!(
                    "second signal: abandoning running snapshots (nothing partial is listed)"
                );
                return Ok(());
            }
            Ok(Event::Signal(_)) => {
                stopping = true;
                if !running.is_empty() {
                    tracing::info!(
                        "stopping: waiting for {} running snapshot(s) to finish",
                        running.len()
                    );
                }
            }
            Ok(Event::Done(id)) => {
                if let Some(done) = running.remove(&id)
                    && let Some(e) = table.iter_mut().find(|e| slot(&e.job) == done.slot)
                {
                    e.next = e.schedule.next_after(Utc::now());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the scheduler's event channel closed"),
        }
    }
}

/// Re-reads the config file. Runs in progress are tracked apart from the table, so they
/// are awaited (and never doubled) whatever the new config says.
fn reload(env: &Env, args: &RunArgs) -> Result<(Env, Vec<Entry>)> {
    let path = env
        .config
        .as_ref()
        .map(|c| c.path.clone())
        .context("no config file to reload")?;
    let new_env = Env {
        config: Some(ConfigFile::load(&path)?),
        ui: env.ui,
    };
    let table = load(&new_env, args)?;
    Ok((new_env, table))
}
