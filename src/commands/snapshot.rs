//! `sqlbak snapshot`: capture → compress → store, for one database or every configured one.

use super::{Env, rfc3339};
use crate::capture::{self, CaptureOptions};
use crate::catalog::{self, SnapshotKey};
use crate::cli::SnapshotArgs;
use crate::codec::{self, CompressOptions, ImageMeta};
use crate::config::Resolved;
use crate::exit;
use crate::host;
use crate::storage::{self, ObjectMeta, Storage};
use anyhow::{Context, Result, bail};
use chrono::{SubsecRound, Utc};
use std::fs::File;
use std::path::PathBuf;
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
}

/// Runs `sqlbak snapshot`.
pub fn run(env: &Env, args: &SnapshotArgs) -> Result<()> {
    let jobs = plan(env, args)?;
    let mut taken = Vec::new();
    let mut failed = 0usize;
    for job in &jobs {
        match snapshot_one(env, job) {
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
                if jobs.len() > 1 {
                    tracing::error!("{}: {e:#}", job.name);
                } else {
                    return Err(e);
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&taken)?);
    }
    if failed > 0 {
        bail!("{failed} of {} snapshots failed (see above)", jobs.len());
    }
    Ok(())
}

/// Turns the arguments and config into the list of databases to snapshot.
pub fn plan(env: &Env, args: &SnapshotArgs) -> Result<Vec<Job>> {
    let defaults = env
        .config
        .as_ref()
        .map(|c| c.defaults.clone())
        .unwrap_or_default();
    if let Some(path) = &args.db {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => default_name(path)?,
        };
        catalog::validate_name(&name).map_err(|e| exit::usage(e.to_string()))?;
        let opts = args.options.over(&defaults).resolve()?;
        return Ok(vec![Job {
            path: path.clone(),
            name,
            opts,
        }]);
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
        catalog::validate_name(&name)
            .map_err(|e| exit::usage(format!("config file {}: {e}", cfg.path.display())))?;
        let opts = args
            .options
            .over(&db.options.over(&cfg.defaults))
            .resolve()?;
        if all
            .iter()
            .any(|j| j.name == name && j.opts.dest == opts.dest)
        {
            bail!(exit::usage(format!(
                "config file {}: two databases are both named {name:?} in {}; give one a different name",
                cfg.path.display(),
                opts.dest
            )));
        }
        all.push(Job {
            path: db.path.clone(),
            name,
            opts,
        });
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

fn snapshot_one(env: &Env, job: &Job) -> Result<Taken> {
    let started = Instant::now();
    let what = || format!("snapshot of {} to {}", job.path.display(), job.opts.dest);
    capture::check_source(&job.path).with_context(what)?;
    let store = storage::open(&job.opts.dest).with_context(what)?;
    wait_for_fresh_second(store.as_ref(), &job.name).with_context(what)?;

    let bar = env.ui.pages(0, "copy");
    let image = capture::capture(
        &job.path,
        &CaptureOptions {
            method: job.opts.method,
            busy_timeout: job.opts.busy_timeout,
            tmp_dir: job.opts.tmp_dir.clone(),
        },
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .with_context(what)?;
    bar.finish_and_clear();
    tracing::debug!(
        "{}: captured {} and its sha256 in {:.2}s",
        job.name,
        indicatif::HumanBytes(image.size),
        started.elapsed().as_secs_f64()
    );
    let compress_started = Instant::now();

    let key = SnapshotKey::new(&job.name, image.taken_at, false);
    let key_str = key.key();
    let stats = (|| -> Result<codec::CompressStats> {
        let input = File::open(&image.path)
            .with_context(|| format!("cannot open the captured image {}", image.path.display()))?;
        let meta = ObjectMeta {
            image_sha256: image.sha256.clone(),
            image_size: image.size,
        };
        let mut writer = store.create(&key_str, &meta)?;
        let bar = env.ui.bytes(image.size, "compress");
        let stats = codec::compress(
            input,
            &mut writer,
            &CompressOptions {
                level: job.opts.level,
                jobs: job.opts.jobs as usize,
                chunk_size: codec::CHUNK_SIZE,
            },
            |size, sha256| ImageMeta {
                size,
                sha256: sha256.to_string(),
                page_size: Some(image.page_size),
                page_count: Some(image.page_count),
                host: Some(host::hostname()),
                version: Some(env!("CARGO_PKG_VERSION").to_string()),
            },
            &|n| bar.set_position(n),
        )
        .with_context(|| format!("cannot write {key_str} to {}", store.url()))?;
        bar.finish_and_clear();
        if stats.sha256 != image.sha256 {
            bail!(
                "the temporary image {} changed while it was compressed; nothing was stored",
                image.path.display()
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

    Ok(Taken {
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
