//! `sqlbak verify`: prove snapshots restorable without restoring them anywhere that matters.

use super::{Env, list_snapshots, rfc3339};
use crate::catalog::Snapshot;
use crate::cli::VerifyArgs;
use crate::encryption::Identities;
use crate::exit;
use crate::host;
use crate::image;
use crate::output::report_line;
use anyhow::{Result, bail};
use std::path::Path;

/// Start of the name of the temporary image a verify writes in its temporary directory:
/// `sqlbak-verify-<tag>`.
const VERIFY_TEMP_PREFIX: &str = "sqlbak-verify-";

#[derive(Debug, serde::Serialize)]
struct Outcome {
    name: String,
    key: String,
    dest: String,
    time: String,
    size: u64,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `sqlbak verify`.
pub fn run(env: &Env, args: &VerifyArgs) -> Result<()> {
    let dests = env.read_dests(args.dest.as_deref())?;
    let tmp_dir = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    // Images of verify runs that were killed midway; see host.rs for whose are removed.
    host::remove_stale_temporaries(&tmp_dir, |name| name.strip_prefix(VERIFY_TEMP_PREFIX));
    let mut outcomes = Vec::new();
    let identity_file = env.identity_file(args.age_identity.as_deref(), args.name.as_deref());
    let mut identities: Option<Option<Identities>> = None;
    for dest in &dests {
        let (store, snaps) = list_snapshots(dest, args.name.as_deref())?;
        let chosen: Vec<&Snapshot> = if args.all {
            snaps.iter().collect()
        } else {
            // Newest of each name: the listing is sorted by name, then time.
            snaps
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    snaps
                        .get(i + 1)
                        .is_none_or(|next| next.key.name != s.key.name)
                })
                .map(|(_, s)| s)
                .collect()
        };
        for snap in chosen {
            if snap.key.encrypted && identities.is_none() {
                identities = Some(super::load_identities(identity_file.as_deref())?);
            }
            let ids = identities.as_ref().and_then(Option::as_ref);
            let result = check_one(env, store.as_ref(), snap, ids, &tmp_dir);
            let mut outcome = Outcome {
                name: snap.key.name.clone(),
                key: snap.key.key(),
                dest: dest.clone(),
                time: rfc3339(snap.key.time),
                size: snap.size,
                ok: result.is_ok(),
                image_size: None,
                sha256: None,
                error: None,
            };
            match result {
                Ok(report) => {
                    outcome.image_size = Some(report.size);
                    outcome.sha256 = Some(report.sha256);
                    if !args.json {
                        report_line(format_args!("ok      {}", outcome.key))?;
                    }
                }
                Err(e) => {
                    outcome.error = Some(format!("{e:#}"));
                    if !args.json {
                        report_line(format_args!("FAILED  {}: {e:#}", outcome.key))?;
                    }
                }
            }
            outcomes.push(outcome);
        }
    }
    if args.json {
        report_line(serde_json::to_string_pretty(&outcomes)?)?;
    }
    if outcomes.is_empty() {
        bail!(exit::nothing(format!(
            "no snapshots to verify in {}",
            dests.join(", ")
        )));
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        bail!(
            "{failed} of {} snapshots failed verification",
            outcomes.len()
        );
    }
    Ok(())
}

fn check_one(
    env: &Env,
    store: &dyn crate::storage::Storage,
    snap: &Snapshot,
    identities: Option<&Identities>,
    tmp_dir: &Path,
) -> Result<crate::codec::DecodeReport> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{VERIFY_TEMP_PREFIX}{}", host::temp_tag_prefix()))
        .rand_bytes(host::TEMP_RAND_LEN)
        .tempfile_in(tmp_dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create a temporary file in {}: {e}",
                tmp_dir.display()
            )
        })?;
    let bar = env.ui.bytes(snap.size, "verify");
    let report = image::fetch(store, snap, identities, tmp.as_file(), &|n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    image::check_integrity(tmp.path(), image::Check::Full)?;
    Ok(report)
}
