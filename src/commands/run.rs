//! `sqlbak run`: a long-running scheduler for hosts and containers without cron.
//!
//! One thread waits for the earliest due time, a signal, or a finished job; each due
//! database runs on its own worker thread through the same path as `sqlbak snapshot`
//! ([`super::snapshot::run_one`]), and never twice at once. Fires that pass while a
//! database is still running are skipped, not queued.

use super::snapshot::{self, Job};
use super::{Env, rfc3339, schedule_of};
use crate::cli::{RunArgs, SnapshotArgs};
use crate::config::ConfigFile;
use crate::exit;
use crate::schedule::Schedule;
use anyhow::{Context, Result, bail};
use chrono::Utc;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Never sleep longer than this, so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

enum Event {
    Signal(i32),
    Done { slot: String, result: Result<()> },
}

struct Scheduled {
    job: Job,
    schedule: Schedule,
    next: Option<chrono::DateTime<Utc>>,
    running: bool,
}

impl Scheduled {
    fn slot(&self) -> String {
        format!("{}\u{0}{}", self.job.name, self.job.opts.dest)
    }
}

fn load(env: &Env, args: &RunArgs) -> Result<Vec<Scheduled>> {
    let Some(cfg) = &env.config else {
        bail!(exit::usage(
            "sqlbak run needs --config FILE (or SQLBAK_CONFIG)"
        ));
    };
    let snapshot_args = SnapshotArgs {
        name: args.name.clone(),
        ..SnapshotArgs::default()
    };
    let jobs = snapshot::plan(env, &snapshot_args)?;
    let mut out = Vec::new();
    let now = Utc::now();
    for job in jobs {
        let Some(entry) = cfg.entry_named(&job.name) else {
            continue;
        };
        let opts = entry.options.over(&cfg.defaults);
        let schedule = schedule_of(&opts).map_err(|e| {
            exit::usage(format!(
                "config file {}, database {}: {e:#}",
                cfg.path.display(),
                job.name
            ))
        })?;
        match schedule {
            Some(schedule) => out.push(Scheduled {
                next: schedule.next_after(now),
                schedule,
                job,
                running: false,
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
    for s in &out {
        match s.next {
            Some(next) => tracing::info!(
                "{}: scheduled {} (next {})",
                s.job.name,
                s.schedule,
                rfc3339(next)
            ),
            None => tracing::warn!("{}: {} never fires again", s.job.name, s.schedule),
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

    let mut stopping = false;
    // Jobs still running that a reload removed from the table; awaited all the same.
    let mut orphans: Vec<String> = Vec::new();
    loop {
        let running = table.iter().filter(|s| s.running).count() + orphans.len();
        if stopping && running == 0 {
            tracing::info!("stopped");
            return Ok(());
        }
        let now = Utc::now();
        if !stopping {
            for s in table
                .iter_mut()
                .filter(|s| !s.running && s.next.is_some_and(|n| n <= now))
            {
                s.running = true;
                let job = s.job.clone();
                let slot = s.slot();
                let env = Arc::clone(&env);
                let tx = tx.clone();
                tracing::info!("{}: starting snapshot", job.name);
                std::thread::spawn(move || {
                    let result = snapshot::run_one(&env, &job).map(|taken| {
                        tracing::info!(
                            "{}: stored {} ({}, {:.1}s)",
                            taken.name,
                            taken.key,
                            indicatif::HumanBytes(taken.size),
                            taken.seconds
                        );
                    });
                    let _ = tx.send(Event::Done { slot, result });
                });
            }
        }
        let wait = if stopping {
            MAX_SLEEP
        } else {
            table
                .iter()
                .filter(|s| !s.running)
                .filter_map(|s| s.next)
                .min()
                .map_or(MAX_SLEEP, |next| {
                    (next - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                })
                .min(MAX_SLEEP)
        };
        match rx.recv_timeout(wait) {
            Ok(Event::Signal(SIGHUP)) => match reload(&env, args, &table) {
                Ok((new_env, new_table, gone)) => {
                    env = Arc::new(new_env);
                    table = new_table;
                    orphans.extend(gone);
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
                let running = table.iter().filter(|s| s.running).count();
                if running > 0 {
                    tracing::info!("stopping: waiting for {running} running snapshot(s) to finish");
                }
            }
            Ok(Event::Done { slot, result }) => {
                if let Err(e) = &result {
                    tracing::error!(
                        "{}: snapshot failed: {e:#}",
                        slot.split('\u{0}').next().unwrap_or("")
                    );
                }
                if let Some(s) = table.iter_mut().find(|s| s.slot() == slot) {
                    s.running = false;
                    s.next = s.schedule.next_after(Utc::now());
                } else {
                    orphans.retain(|x| x != &slot);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the scheduler's event channel closed"),
        }
    }
}

/// Re-reads the config file; jobs that are running keep their running state, and those
/// the new config dropped are returned so the caller still waits for them.
fn reload(
    env: &Env,
    args: &RunArgs,
    old: &[Scheduled],
) -> Result<(Env, Vec<Scheduled>, Vec<String>)> {
    let path = env
        .config
        .as_ref()
        .map(|c| c.path.clone())
        .context("no config file to reload")?;
    let new_env = Env {
        config: Some(ConfigFile::load(&path)?),
        ui: env.ui,
    };
    let mut table = load(&new_env, args)?;
    let mut gone = Vec::new();
    for s in old.iter().filter(|s| s.running) {
        match table.iter_mut().find(|n| n.slot() == s.slot()) {
            Some(n) => n.running = true,
            None => gone.push(s.slot()),
        }
    }
    Ok((new_env, table, gone))
}
