//! `sqlbak prune`: apply a retention policy to each database's snapshots. The policy
//! engine ([`crate::retention`]) decides; this module lists, reports and deletes.

use super::{Env, list_snapshots, rfc3339, short_duration};
use crate::catalog::Snapshot;
use crate::cli::PruneArgs;
use crate::exit;
use crate::output::report_line;
use crate::retention::{self, RetentionPlan, RetentionPolicy};
use crate::storage::{Storage, StorageError};
use anyhow::{Result, bail};

/// Keys per delete request: the S3 DeleteObjects limit, harmless elsewhere.
const DELETE_BATCH: usize = 1000;

/// What pruning one database's snapshots decided and did.
pub struct PruneOutcome {
    /// Database name.
    pub name: String,
    /// The snapshots the plan was made from (decisions index into this).
    pub snapshots: Vec<Snapshot>,
    /// Keep/remove verdicts with reasons, and the coverage left.
    pub plan: RetentionPlan,
    /// Keys actually deleted (none on a dry run).
    pub deleted: Vec<String>,
    /// Keys that could not be deleted, and why.
    pub failed: Vec<(String, StorageError)>,
}

/// Plans and (unless `dry_run`) deletes for one database. Only keys that parse as this
/// database's snapshot keys are ever considered, so foreign objects are never touched.
/// `must_keep` names a snapshot that may not be removed (the one just stored): a plan
/// that would remove it deletes nothing.
pub fn prune_one(
    store: &dyn Storage,
    name: &str,
    snapshots: Vec<Snapshot>,
    policy: &RetentionPolicy,
    dry_run: bool,
    must_keep: Option<&str>,
) -> Result<PruneOutcome> {
    let plan = retention::plan(&snapshots, |s| s.key.time, policy)
        .map_err(|e| exit::usage(format!("{name}: {e}")))?;
    let doomed: Vec<String> = plan
        .removed()
        .map(|d| snapshots[d.index].key.key())
        .collect();
    if let Some(keep) = must_keep
        && doomed.iter().any(|k| k == keep)
    {
        bail!(
            "not pruning {name}: the policy would remove {keep}, the snapshot just stored, because a newer-dated snapshot exists; check the system clock and the snapshots dated in the future"
        );
    }
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    if !dry_run {
        for batch in doomed.chunks(DELETE_BATCH) {
            let errors = store.delete(batch);
            for key in batch {
                if !errors.iter().any(|(k, _)| k == key) {
                    deleted.push(key.clone());
                }
            }
            failed.extend(errors);
        }
    }
    Ok(PruneOutcome {
        name: name.to_string(),
        snapshots,
        plan,
        deleted,
        failed,
    })
}

struct Target {
    dest: String,
    name: Option<String>,
    policy: RetentionPolicy,
}

fn targets(env: &Env, args: &PruneArgs) -> Result<Vec<Target>> {
    let cfg = env.config.as_ref();
    if let Some(dest) = &args.dest {
        let configured = cfg.and_then(|c| {
            let entry = args.name.as_deref().and_then(|n| c.entry_named(n));
            entry
                .map(|db| db.options.over(&c.defaults).retention)
                .unwrap_or_else(|| c.defaults.retention.clone())
        });
        return Ok(vec![Target {
            dest: dest.clone(),
            name: args.name.clone(),
            policy: args.keep.clone().or(configured.unwrap_or_default()),
        }]);
    }
    let Some(cfg) = cfg else {
        bail!(exit::usage(
            "no destination: pass --dest DIR (or --config FILE)"
        ));
    };
    let mut out = Vec::new();
    for (name, opts, dest) in cfg.entries(args.name.as_deref())? {
        out.push(Target {
            dest,
            name: Some(name),
            policy: args.keep.clone().or(opts.retention.unwrap_or_default()),
        });
    }
    if out.is_empty() {
        bail!(exit::nothing(match &args.name {
            Some(n) => format!("no database named {n:?} in {}", cfg.path.display()),
            None => format!("{} lists no [[databases]]", cfg.path.display()),
        }));
    }
    Ok(out)
}

/// Runs `sqlbak prune`.
pub fn run(env: &Env, args: &PruneArgs) -> Result<()> {
    let mut targets = targets(env, args)?;
    // An empty policy would delete everything: refuse it before touching any storage. In a
    // config, a database without rules is one kept forever, and the others are still pruned.
    let everything_configured = args.dest.is_none() && args.name.is_none();
    if everything_configured && targets.iter().any(|t| !t.policy.is_empty()) {
        targets.retain(|t| {
            let keep = !t.policy.is_empty();
            if !keep {
                tracing::info!(
                    "{}: no retention rules, keeping every snapshot",
                    t.name.as_deref().unwrap_or(&t.dest)
                );
            }
            keep
        });
    }
    for t in &targets {
        if t.policy.is_empty() {
            bail!(exit::usage(format!(
                "no retention rule for {}: {}",
                t.name.as_deref().unwrap_or(&t.dest),
                retention::RetentionError::EmptyPolicy
            )));
        }
    }
    let mut json_rows = Vec::new();
    let mut failures = 0usize;
    for t in &targets {
        let (store, snaps) = list_snapshots(&t.dest, t.name.as_deref())?;
        let mut names: Vec<String> = snaps.iter().map(|s| s.key.name.clone()).collect();
        names.dedup();
        for name in names {
            let group: Vec<Snapshot> = snaps
                .iter()
                .filter(|s| s.key.name == name)
                .cloned()
                .collect();
            let outcome = prune_one(store.as_ref(), &name, group, &t.policy, args.dry_run, None)?;
            for (key, err) in &outcome.failed {
                eprintln!(
                    "sqlbak: error: cannot delete {key} from {}: {err}",
                    store.url()
                );
            }
            failures += outcome.failed.len();
            if args.json {
                json_rows.extend(json_of(&outcome, &store.url()));
            } else {
                print_outcome(&outcome, &store.url(), args.dry_run)?;
            }
        }
    }
    if args.json {
        report_line(serde_json::to_string_pretty(&json_rows)?)?;
    }
    if failures > 0 {
        bail!("{failures} snapshot(s) could not be deleted (see above); they are still listed");
    }
    Ok(())
}

fn json_of(o: &PruneOutcome, dest: &str) -> Vec<serde_json::Value> {
    o.plan
        .decisions
        .iter()
        .map(|d| {
            let s = &o.snapshots[d.index];
            serde_json::json!({
                "name": o.name,
                "dest": dest,
                "key": s.key.key(),
                "time": rfc3339(s.key.time),
                "size": s.size,
                "keep": d.keep,
                "reasons": d.reasons,
            })
        })
        .collect()
}

fn print_outcome(o: &PruneOutcome, dest: &str, dry_run: bool) -> Result<()> {
    let kept = o.plan.kept().count();
    let removed = o.plan.decisions.len() - kept;
    let verb = if dry_run { "would remove" } else { "removing" };
    report_line(format_args!(
        "{} in {dest}: keeping {kept} of {}, {verb} {removed}",
        o.name,
        o.plan.decisions.len()
    ))?;
    for d in &o.plan.decisions {
        let reasons: Vec<&str> = d.reasons.iter().map(|r| r.as_str()).collect();
        let verdict = if d.keep { "keep  " } else { "remove" };
        report_line(format_args!(
            "  {verdict}  {}  {}",
            rfc3339(d.time),
            reasons.join(", ")
        ))?;
    }
    let c = &o.plan.coverage;
    if let (Some(oldest), Some(newest)) = (c.oldest, c.newest) {
        let gap = c
            .widest_gap
            .map(|g| short_duration(g.num_seconds()))
            .unwrap_or_else(|| "-".into());
        report_line(format_args!(
            "  coverage: {} snapshots from {} to {}, widest gap {gap}",
            c.count,
            rfc3339(oldest),
            rfc3339(newest)
        ))?;
    }
    Ok(())
}
