//! What surrounds a job when nobody is watching: the start/success/failure pings, the
//! `on_success`/`on_failure` hooks and the metrics file. None of them can change a job's
//! result; their own trouble is logged as a warning.

use super::snapshot::{Job, Taken};
use crate::hooks;
use crate::metrics;
use crate::ping::{Event, Pinger};
use anyhow::Result;
use std::time::Instant;

/// A job in progress, as its reports see it.
pub struct Outcome {
    started: Instant,
    pinger: Option<Pinger>,
}

impl Outcome {
    /// Sends the start ping (if a ping URL is set) and starts the clock.
    pub fn start(job: &Job) -> Outcome {
        let pinger = job
            .opts
            .ping_url
            .as_deref()
            .map(|url| Pinger::new(url, &job.name));
        if let Some(p) = &pinger {
            p.ping(Event::Start, "");
        }
        Outcome {
            started: Instant::now(),
            pinger,
        }
    }

    /// Reports the result: metrics, then the ping, then the hook.
    pub fn finish(self, job: &Job, result: &Result<Taken>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let now = chrono::Utc::now().timestamp();
        if let Some(path) = &job.opts.metrics_file {
            let updated = metrics::update(path, |m| match result {
                Ok(t) => m.record_success(&job.name, now, seconds, t.size),
                Err(_) => m.record_failure(&job.name, now),
            });
            if let Err(e) = updated {
                tracing::warn!("{}: cannot update the metrics file: {e}", job.name);
            }
        }
        let mut vars = vec![
            ("SQLBAK_NAME", job.name.clone()),
            ("SQLBAK_DB", job.path.display().to_string()),
            ("SQLBAK_DEST", job.opts.dest.clone()),
            ("SQLBAK_DURATION", format!("{seconds:.3}")),
        ];
        let hook = match result {
            Ok(t) => {
                if let Some(p) = &self.pinger {
                    p.ping(
                        Event::Success,
                        &format!("stored {} ({} bytes) in {seconds:.1}s", t.key, t.size),
                    );
                }
                vars.push(("SQLBAK_STATUS", "success".into()));
                vars.push(("SQLBAK_KEY", t.key.clone()));
                vars.push(("SQLBAK_SIZE", t.size.to_string()));
                job.opts.on_success.as_deref().map(|c| ("on_success", c))
            }
            Err(e) => {
                let error = format!("{e:#}");
                if let Some(p) = &self.pinger {
                    p.ping(Event::Failure, &error);
                }
                vars.push(("SQLBAK_STATUS", "failure".into()));
                vars.push(("SQLBAK_ERROR", error));
                job.opts.on_failure.as_deref().map(|c| ("on_failure", c))
            }
        };
        if let Some((which, command)) = hook {
            match hooks::run(command, &vars, hooks::HOOK_TIMEOUT) {
                Ok(()) => tracing::debug!("{}: {which} hook succeeded", job.name),
                Err(e) => tracing::warn!(
                    "{}: the {which} hook `{command}` did not succeed: {e}; the snapshot's result is not affected",
                    job.name
                ),
            }
        }
    }
}
