//! `sqlbak snapshot`: capture → compress → store, for one database or every configured one.

use super::{Env, rfc3339, unattended};
use crate::capture::{self, CaptureOptions};
use crate::catalog::{self, SnapshotKey};
use crate::cli::SnapshotArgs;
use crate::codec::{self, CompressOptions, ImageMeta};
use crate::config::{Options, Resolved};
use crate::encryption::Recipients;
use crate::exit;
use crate::host;
use crate::lock::DatabaseLock;
use crate::storage::{ObjectMeta, Storage};
use anyhow::{Context, Result, bail};
use chrono::{SubsecRound, Utc};
use std::fs;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One database to snapshot, with every option resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// Source database file.
    pub path: PathBuf,
    /// Snapshot name.
    pub name: String,
    /// Where and how.
    pub opts: Resolved,
    /// Who can decrypt the snapshots (empty: not encrypted).
    pub recipients: Arc<Recipients>,
    /// When `sqlbak run` snapshots it (`schedule` or `interval` in the config).
    pub schedule: Option<crate::schedule::Schedule>,
}

impl Job {
    /// "snapshot of PATH to DEST", the context of every error of this job.
    fn describe(&self) -> String {
        format!("snapshot of {} to {}", self.path.display(), self.opts.dest)
    }
}

/// What one successful snapshot produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Taken {
    /// Snapshot name.
    pub name: String,
    /// Storage key.
    pub key: String,
    /// Destination.
    pub dest: String,
    /// Capture time, RFC 3339 UTC.
    pub time: String,
    /// Stored (compressed) bytes.
    pub size: u64,
    /// Uncompressed image bytes.
    pub image_size: u64,
    /// sha256 of the image.
    pub sha256: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Keys deleted by the retention policy after this snapshot.
    pub pruned: Vec<String>,
}

/// Runs `sqlbak snapshot`.
pub fn run(env: &Env, args: &SnapshotArgs) -> Result<()> {
    let jobs = plan(env, args)?;
    let mut taken = Vec::new();
    let (mut failed, mut locked) = (0usize, 0usize);
    for job in &jobs {
        match run_one(env, job) {
            Ok(t) => {
                tracing::info!(
                    "{}: stored {} in {} ({} from {}, {:.1}s)",
                    t.name,
                    t.key,
                    t.dest,
                    indicatif::HumanBytes(t.size),
                    indicatif::HumanBytes(t.image_size),
                    t.seconds
                );
                taken.push(t);
            }
            Err(e) => {
                failed += 1;
                locked += usize::from(exit::code_of(&e) == exit::LOCKED);
                if jobs.len() > 1 {
                    tracing::error!("{}: {e:#}", job.name);
                } else {
                    return Err(e);
                }
            }
        }
    }
    if args.json {
        crate::output::report_line(serde_json::to_string_pretty(&taken)?)?;
    }
    if failed > 0 && failed == locked {
        bail!(exit::locked(format!(
            "{failed} of {} databases were locked by another run (see above)",
            jobs.len()
        )));
    }
    if failed > 0 {
        bail!("{failed} of {} snapshots failed (see above)", jobs.len());
    }
    Ok(())
}

/// Resolves one database's layered options (config entry over top level) under the
/// command-line flags, once, so every later step uses the same settings.
fn job(args: &SnapshotArgs, path: &Path, name: String, layered: &Options) -> Result<Job> {
    catalog::validate_name(&name).map_err(|e| exit::usage(e.to_string()))?;
    let schedule = super::schedule_of(layered)?;
    let mut opts = args.options.over(layered).resolve()?;
    opts.retention = args.keep.clone().or(opts.retention);
    let recipients = recipients_of(&opts)?;
    Ok(Job {
        path: path.to_path_buf(),
        name,
        opts,
        recipients,
        schedule,
    })
}

/// Turns the arguments and config into the list of databases to snapshot.
pub fn plan(env: &Env, args: &SnapshotArgs) -> Result<Vec<Job>> {
    if let Some(path) = &args.db {
        // A database that is also in the config keeps its entry's settings.
        let same_file = |p: &Path| {
            p == path.as_path()
                || matches!((fs::canonicalize(p), fs::canonicalize(path)), (Ok(a), Ok(b)) if a == b)
        };
        let (layered, entry_name) = match &env.config {
            Some(cfg) => match cfg.databases.iter().find(|db| same_file(&db.path)) {
                Some(db) => (db.options.over(&cfg.defaults), db.name.clone()),
                None => (cfg.defaults.clone(), None),
            },
            None => (Options::default(), None),
        };
        let name = match args.name.clone().or(entry_name) {
            Some(n) => n,
            None => default_name(path)?,
        };
        return Ok(vec![job(args, path, name, &layered)?]);
    }
    let Some(cfg) = &env.config else {
        bail!(exit::usage(
            "nothing to snapshot: pass --db PATH (or --config FILE listing [[databases]])"
        ));
    };
    let mut all: Vec<Job> = Vec::new();
    for db in &cfg.databases {
        let name = match &db.name {
            Some(n) => n.clone(),
            None => default_name(&db.path)?,
        };
        let job = job(
            args,
            &db.path,
            name.clone(),
            &db.options.over(&cfg.defaults),
        )
        .map_err(|e| {
            exit::usage(format!(
                "config file {}, database {name}: {e:#}",
                cfg.path.display()
            ))
        })?;
        if all
            .iter()
            .any(|j| j.name == job.name && j.opts.dest == job.opts.dest)
        {
            bail!(exit::usage(format!(
                "config file {}: two databases are both named {name:?} in {}; give one a different name",
                cfg.path.display(),
                job.opts.dest
            )));
        }
        all.push(job);
    }
    let jobs: Vec<Job> = all
        .into_iter()
        .filter(|j| args.name.as_ref().is_none_or(|n| n == &j.name))
        .collect();
    if jobs.is_empty() {
        let what = match &args.name {
            Some(n) => format!("no database named {n:?} in {}", cfg.path.display()),
            None => format!("{} lists no [[databases]]", cfg.path.display()),
        };
        bail!(exit::nothing(what));
    }
    Ok(jobs)
}

/// Parses the recipients up front, so a bad one fails before any work is done.
fn recipients_of(opts: &Resolved) -> Result<Arc<Recipients>> {
    Recipients::parse(&opts.age_recipients, opts.age_recipients_file.as_deref())
        .map(Arc::new)
        .map_err(|e| exit::usage(e.to_string()).into())
}

/// The snapshot name for a database file: its file stem.
pub fn default_name(path: &std::path::Path) -> Result<String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    catalog::validate_name(&stem).map_err(|_| {
        exit::usage(format!(
            "cannot derive a snapshot name from {}; pass --name (letters, digits, '.', '_', '-')",
            path.display()
        ))
    })?;
    Ok(stem)
}

/// Runs one job the way every caller (the `snapshot` command and the `run` daemon) must:
/// this is where per-database locking, hooks, pings and metrics wrap the snapshot.
///
/// A run that finds the database locked by another run (exit code 4) does nothing else:
/// no hooks, pings or metrics, since the holder reports its own outcome. Everything else,
/// including a database that is missing, is a failure that the hooks, pings and metrics see.
pub fn run_one(env: &Env, job: &Job) -> Result<Taken> {
    let what = || job.describe();
    let lock = match capture::check_exists(&job.path) {
        Err(e) => Err(anyhow::Error::new(e).context(what())),
        Ok(_) => match DatabaseLock::acquire(&job.path, job.opts.wait) {
            Ok(lock) => Ok(lock),
            Err(e) if e.is_held() => return Err(exit::locked(e.to_string()).into()),
            Err(e) => Err(anyhow::Error::new(e).context(what())),
        },
    };
    let outcome = unattended::Outcome::start(job);
    let (result, lock) = match lock {
        Ok(lock) => (snapshot_one(env, job), Some(lock)),
        Err(e) => (Err(e), None),
    };
    outcome.finish(job, &result);
    drop(lock);
    result
}

fn snapshot_one(env: &Env, job: &Job) -> Result<Taken> {
    let started = Instant::now();
    let what = || job.describe();
    capture::check_source(&job.path).with_context(what)?;
    let store = super::open_storage(&job.opts.dest).with_context(what)?;
    wait_for_fresh_second(store.as_ref(), &job.name).with_context(what)?;

    let bar = env.ui.pages(0, "copy");
    let mut image = capture::capture(
        &job.path,
        &CaptureOptions {
            method: job.opts.method,
            busy_timeout: job.opts.busy_timeout,
            tmp_dir: job.opts.tmp_dir.clone(),
            tmp_limit: job.opts.tmp_limit,
        },
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .with_context(what)?;
    bar.finish_and_clear();
    tracing::debug!(
        "{}: {} {} in {:.2}s",
        job.name,
        if image.is_streamed() {
            "streaming the pages of"
        } else {
            "copied"
        },
        indicatif::HumanBytes(image.size),
        started.elapsed().as_secs_f64()
    );
    let compress_started = Instant::now();

    let key = SnapshotKey::new(&job.name, image.taken_at, !job.recipients.is_empty());
    let key_str = key.key();
    let stats = (|| -> Result<codec::CompressStats> {
        let size = image.size;
        let (page_size, page_count) = (image.page_size, image.page_count);
        let input = image.reader()?;
        let meta = ObjectMeta {
            image_size: size,
            image_sha256: None,
        };
        let mut writer = store.create(&key_str, &meta)?;
        let bar = env.ui.bytes(size, "compress");
        let opts = CompressOptions {
            level: job.opts.level,
            jobs: job.opts.jobs as usize,
            chunk_size: codec::CHUNK_SIZE,
        };
        let trailer = |size, sha256: &str| ImageMeta {
            size,
            sha256: sha256.to_string(),
            page_size: Some(page_size),
            page_count: Some(page_count),
            host: Some(host::hostname()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        };
        let progress = |n| bar.set_position(n);
        let context = || format!("cannot write {key_str} to {}", store.url());
        let stats = if job.recipients.is_empty() {
            codec::compress(input, &mut writer, &opts, trailer, &progress).with_context(context)?
        } else {
            let mut sealed = job.recipients.encrypt(&mut writer).with_context(context)?;
            let stats = codec::compress(input, &mut sealed, &opts, trailer, &progress)
                .with_context(context)?;
            sealed.finish().with_context(context)?;
            stats
        };
        bar.finish_and_clear();
        // A streamed capture that failed part-way ends its stream early: its own error
        // says why, before the size check below would.
        image.finish()?;
        if stats.input_bytes != size {
            bail!(
                "the captured image should be {size} bytes but {} were read; nothing was stored",
                stats.input_bytes
            );
        }
        writer.commit()?;
        tracing::debug!(
            "{}: compressed and stored in {:.2}s",
            job.name,
            compress_started.elapsed().as_secs_f64()
        );
        Ok(stats)
    })()
    .with_context(what)?;

    let pruned = if job.opts.retention.is_empty() {
        Vec::new()
    } else {
        prune_after(store.as_ref(), job, &key_str).with_context(|| {
            format!(
                "the snapshot {key_str} was stored, but pruning old snapshots of {} failed",
                job.name
            )
        })?
    };

    Ok(Taken {
        pruned,
        name: job.name.clone(),
        key: key_str,
        dest: store.url(),
        time: rfc3339(key.time),
        size: stats.output_bytes,
        image_size: stats.input_bytes,
        sha256: stats.sha256,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Applies the job's retention policy; runs only after a snapshot was stored.
fn prune_after(store: &dyn Storage, job: &Job, just_stored: &str) -> Result<Vec<String>> {
    let objects = store.list(&format!("{}/", job.name))?;
    let snaps = catalog::snapshots_from_listing(
        objects.iter().map(|o| (o.key.as_str(), o.size)),
        Some(&job.name),
    );
    let outcome = super::prune::prune_one(
        store,
        &job.name,
        snaps,
        &job.opts.retention,
        false,
        Some(just_stored),
    )?;
    if let Some((key, err)) = outcome.failed.first() {
        bail!(
            "{} snapshot(s) could not be deleted, first {key}: {err}",
            outcome.failed.len()
        );
    }
    if !outcome.deleted.is_empty() {
        tracing::info!(
            "{}: pruned {} old snapshot(s)",
            job.name,
            outcome.deleted.len()
        );
    }
    Ok(outcome.deleted)
}

/// Keys have second resolution and are never overwritten, so a second snapshot within the
/// same second as the newest one waits for the next second instead of failing.
fn wait_for_fresh_second(store: &dyn Storage, name: &str) -> Result<()> {
    let newest = match store.list(&format!("{name}/")) {
        Ok(objects) => catalog::snapshots_from_listing(
            objects.iter().map(|o| (o.key.as_str(), o.size)),
            Some(name),
        )
        .last()
        .map(|s| s.key.time),
        Err(crate::storage::StorageError::MissingDestination(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(newest) = newest {
        let now = Utc::now();
        let wait = (newest + chrono::Duration::seconds(1) - now)
            .to_std()
            .unwrap_or(Duration::ZERO);
        if wait > Duration::from_secs(1) {
            tracing::warn!(
                "the newest snapshot of {name} ({}) is in the future; check the system clock",
                rfc3339(newest)
            );
        } else if now.trunc_subsecs(0) <= newest {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}
