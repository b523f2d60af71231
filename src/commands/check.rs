//! `sqlbak check`: make a failed or missing backup loud. Reads listings only.

use super::{Env, list_snapshots, rfc3339, schedule_of, short_duration};
use crate::catalog::Snapshot;
use crate::cli::CheckArgs;
use crate::exit;
use crate::output::report_line;
use crate::schedule::Schedule;
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

struct Target {
    name: String,
    dest: String,
    schedule: Option<Schedule>,
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    name: String,
    dest: String,
    ok: bool,
    /// ok, stale, missing or missed.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    newest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_slot: Option<String>,
    message: String,
}

fn targets(env: &Env, args: &CheckArgs) -> Result<Vec<Target>> {
    if let Some(dest) = &args.dest {
        let names = match &args.name {
            Some(n) => vec![n.clone()],
            None => {
                let (_, snaps) = list_snapshots(dest, None)?;
                let mut names: Vec<String> = snaps.into_iter().map(|s| s.key.name).collect();
                names.dedup();
                if names.is_empty() {
                    bail!("no snapshots at all in {dest}");
                }
                names
            }
        };
        return Ok(names
            .into_iter()
            .map(|name| Target {
                name,
                dest: dest.clone(),
                schedule: None,
            })
            .collect());
    }
    let Some(cfg) = &env.config else {
        bail!(exit::usage("pass --dest and --name, or --config FILE"));
    };
    let mut out = Vec::new();
    for (name, opts, dest) in cfg.entries(args.name.as_deref())? {
        let schedule = schedule_of(&opts).map_err(|e| {
            exit::usage(format!(
                "config file {}, database {name}: {e:#}",
                cfg.path.display()
            ))
        })?;
        out.push(Target {
            name,
            dest,
            schedule,
        });
    }
    if out.is_empty() {
        bail!(exit::nothing(format!(
            "no database to check in {}",
            cfg.path.display()
        )));
    }
    Ok(out)
}

fn judge(t: &Target, newest: Option<&Snapshot>, args: &CheckArgs, now: DateTime<Utc>) -> Outcome {
    let mut o = Outcome {
        name: t.name.clone(),
        dest: t.dest.clone(),
        ok: true,
        status: "ok",
        newest: newest.map(|s| rfc3339(s.key.time)),
        age_seconds: newest.map(|s| (now - s.key.time).num_seconds()),
        missed_slot: None,
        message: String::new(),
    };
    let Some(newest) = newest else {
        o.ok = false;
        o.status = "missing";
        o.message = format!("no snapshots of {} in {}", t.name, t.dest);
        return o;
    };
    let age = now - newest.key.time;
    let age_text = short_duration(age.num_seconds().max(0));
    if let Some(max) = args.max_age
        && age.to_std().is_ok_and(|a| a > max.0)
    {
        o.ok = false;
        o.status = "stale";
        o.message = format!(
            "the newest snapshot of {} is {age_text} old ({}), older than {}",
            t.name,
            rfc3339(newest.key.time),
            humantime::format_duration(max.0)
        );
        return o;
    }
    if let Some(schedule) = &t.schedule {
        let grace = chrono::Duration::from_std(args.grace.0).unwrap_or(chrono::Duration::zero());
        if let Some(slot) = schedule.next_after(newest.key.time)
            && slot.checked_add_signed(grace).is_some_and(|due| due <= now)
        {
            o.ok = false;
            o.status = "missed";
            o.missed_slot = Some(rfc3339(slot));
            o.message = format!(
                "{} missed its scheduled snapshot at {} ({schedule}); the newest is from {} ({age_text} ago)",
                t.name,
                rfc3339(slot),
                rfc3339(newest.key.time)
            );
            return o;
        }
    }
    o.message = format!(
        "{}: newest snapshot {} ({age_text} ago)",
        t.name,
        rfc3339(newest.key.time)
    );
    o
}

/// Runs `sqlbak check`.
pub fn run(env: &Env, args: &CheckArgs) -> Result<()> {
    let targets = targets(env, args)?;
    for t in &targets {
        if args.max_age.is_none() && t.schedule.is_none() {
            bail!(exit::usage(format!(
                "nothing to check {} against: pass --max-age (or give it a schedule or interval in the config)",
                t.name
            )));
        }
    }
    let now = Utc::now();
    let mut listings: HashMap<String, Vec<Snapshot>> = HashMap::new();
    let mut outcomes = Vec::new();
    for t in &targets {
        if !listings.contains_key(&t.dest) {
            let (_, snaps) = list_snapshots(&t.dest, None)?;
            listings.insert(t.dest.clone(), snaps);
        }
        let newest = listings[&t.dest]
            .iter()
            .filter(|s| s.key.name == t.name)
            .max_by_key(|s| s.key.time);
        outcomes.push(judge(t, newest, args, now));
    }
    if args.json {
        report_line(serde_json::to_string_pretty(&outcomes)?)?;
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    for o in &outcomes {
        if o.ok {
            tracing::info!("{}", o.message);
        } else if !args.json {
            report_line(format_args!("{:<8} {}", o.status.to_uppercase(), o.message))?;
        }
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|o| o.name.as_str()).collect();
        bail!("backup check failed for {}", names.join(", "));
    }
    Ok(())
}
