//! `sqlbak restore`: choose a snapshot by time, rebuild the database beside the output,
//! prove it healthy, and only then move it into place.

use super::{Env, list_snapshots, rfc3339};
use crate::capture::sidecar;
use crate::catalog;
use crate::cli::RestoreArgs;
use crate::exit;
use crate::host;
use crate::image;
use crate::output::report_line;
use crate::storage::local::sync_dir;
use crate::timespec;
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];
/// Between the output's file name and the tag in the name of the hidden temporary a
/// restore writes beside its output: `.<file>.sqlbak-restore-<tag>`.
const RESTORE_TEMP_MARKER: &str = ".sqlbak-restore-";

/// Runs `sqlbak restore`.
pub fn run(env: &Env, args: &RestoreArgs) -> Result<()> {
    let configured = env.config.as_ref().and_then(|cfg| {
        let name = args.name.as_deref()?;
        cfg.databases
            .iter()
            .find(|db| {
                db.name.as_deref() == Some(name)
                    || (db.name.is_none()
                        && super::snapshot::default_name(&db.path).ok().as_deref() == Some(name))
            })
            .map(|db| (db, cfg))
    });
    let dest = match (&args.dest, configured) {
        (Some(d), _) => d.clone(),
        (None, Some((db, cfg))) => db
            .options
            .dest
            .clone()
            .or_else(|| cfg.defaults.dest.clone())
            .ok_or_else(|| exit::usage("no destination: pass --dest DIR"))?,
        (None, None) => {
            let dests = env.read_dests(None)?;
            if dests.len() > 1 {
                bail!(exit::usage(format!(
                    "the config has several destinations ({}); pass --dest or --name",
                    dests.join(", ")
                )));
            }
            dests[0].clone()
        }
    };
    let at = match &args.at {
        Some(text) => Some(
            timespec::parse_instant(text, chrono::Utc::now())
                .map_err(|e| exit::usage(e.to_string()))?,
        ),
        None => None,
    };
    let (store, snaps) = list_snapshots(&dest, args.name.as_deref())?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => {
            let mut names: Vec<&str> = snaps.iter().map(|s| s.key.name.as_str()).collect();
            names.dedup();
            match names.as_slice() {
                [one] => one.to_string(),
                [] => bail!(exit::nothing(format!("no snapshots in {dest}"))),
                many => bail!(exit::usage(format!(
                    "{dest} holds snapshots of several databases ({}); pass --name",
                    many.join(", ")
                ))),
            }
        }
    };
    let Some(snap) = catalog::pick_at(&snaps, at) else {
        let msg = match (at, snaps.first()) {
            (_, None) => format!("no snapshots of {name} in {dest}"),
            (Some(at), Some(oldest)) => format!(
                "no snapshot of {name} at or before {} in {dest}; the oldest is from {}",
                rfc3339(at),
                rfc3339(oldest.key.time)
            ),
            (None, Some(_)) => format!("no snapshots of {name} in {dest}"),
        };
        bail!(exit::nothing(msg));
    };
    let output = match (&args.output, configured) {
        (Some(o), _) => o.clone(),
        (None, Some((db, _))) => db.path.clone(),
        (None, None) => bail!(exit::usage(
            "pass -o PATH: where to write the restored database"
        )),
    };
    check_output(&output, args.force)?;
    let identities = if snap.key.encrypted {
        let file = env.identity_file(args.age_identity.as_deref(), Some(&name));
        let Some(file) = file else {
            bail!(image::missing_identity(&snap.key.key()));
        };
        super::load_identities(Some(&file))?
    } else {
        None
    };

    let dir = output_dir(&output);
    let file_name = output
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| exit::usage(format!("{} is not a file path", output.display())))?;
    // A restore killed midway leaves its temporary; the next restore to the same file
    // removes it once its owner is gone (see host.rs).
    let temp_prefix = format!(".{file_name}{RESTORE_TEMP_MARKER}");
    host::remove_stale_temporaries(&dir, |name| name.strip_prefix(temp_prefix.as_str()));
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{temp_prefix}{}", host::temp_tag_prefix()))
        .rand_bytes(host::TEMP_RAND_LEN)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;

    let bar = env.ui.bytes(snap.size, "restore");
    let report = image::fetch(
        store.as_ref(),
        snap,
        identities.as_ref(),
        tmp.as_file(),
        &|n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    image::check_integrity(tmp.path(), args.check).with_context(|| {
        format!(
            "{} is not a healthy database; nothing was written to {}",
            snap.key,
            output.display()
        )
    })?;

    install(tmp, &output, args.force)?;
    if args.json {
        report_line(serde_json::to_string_pretty(&serde_json::json!({
            "name": name,
            "key": snap.key.key(),
            "time": rfc3339(snap.key.time),
            "output": output,
            "size": report.size,
            "sha256": report.sha256,
        }))?)?;
    } else {
        report_line(format_args!(
            "restored {} (snapshot taken {}) to {}",
            snap.key.key(),
            rfc3339(snap.key.time),
            output.display()
        ))?;
    }
    Ok(())
}

fn output_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Refuses to touch an existing database (or its journal files) without `--force`.
fn check_output(output: &Path, force: bool) -> Result<()> {
    if output.is_dir() {
        bail!(exit::usage(format!(
            "{} is a directory; pass a file path to -o",
            output.display()
        )));
    }
    let dir = output_dir(output);
    if !dir.is_dir() {
        bail!(exit::usage(format!(
            "the directory {} does not exist; create it first",
            dir.display()
        )));
    }
    if force {
        return Ok(());
    }
    let existing: Vec<String> = std::iter::once(output.to_path_buf())
        .chain(SIDECARS.iter().map(|s| sidecar(output, s)))
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "refusing to overwrite {}: {} exists; pass --force to replace the database (stop the application using it first)",
            output.display(),
            existing.join(" and ")
        );
    }
    Ok(())
}

/// Moves the verified temporary into place. With `force`, the old database's `-wal`,
/// `-shm` and `-journal` files are set aside first (they would be replayed into the new
/// file) and deleted only once the new file is in place; on failure they are put back.
fn install(tmp: tempfile::NamedTempFile, output: &Path, force: bool) -> Result<()> {
    let dir = output_dir(output);
    if !force {
        tmp.persist_noclobber(output).map_err(|e| {
            anyhow::Error::new(e.error).context(format!(
                "cannot move the restored database to {} (pass --force if it was created meanwhile)",
                output.display()
            ))
        })?;
        sync_dir(&dir).with_context(|| format!("cannot fsync {}", dir.display()))?;
        return Ok(());
    }
    if let Ok(old) = fs::metadata(output) {
        // Keep the old file's owner and mode, so the application can still open it.
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(old.mode() & 0o7777));
        let _ = std::os::unix::fs::chown(tmp.path(), Some(old.uid()), Some(old.gid()));
    }
    let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
    for suffix in SIDECARS {
        let path = sidecar(output, suffix);
        if path.symlink_metadata().is_ok() {
            let parked = sidecar(&path, &format!(".sqlbak-old-{}", std::process::id()));
            fs::rename(&path, &parked)
                .with_context(|| format!("cannot move stale {} aside", path.display()))?;
            aside.push((path, parked));
        }
    }
    if let Err(e) = tmp.persist(output) {
        for (path, parked) in &aside {
            let _ = fs::rename(parked, path);
        }
        return Err(anyhow::Error::new(e.error).context(format!(
            "cannot move the restored database to {}",
            output.display()
        )));
    }
    for (_, parked) in &aside {
        if let Err(e) = fs::remove_file(parked) {
            tracing::warn!("cannot remove {}: {e}", parked.display());
        }
    }
    sync_dir(&dir).with_context(|| format!("cannot fsync {}", dir.display()))?;
    Ok(())
}
