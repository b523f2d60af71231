//! `sqlbak list`: one listing per destination, no snapshot content read.

use super::{Env, list_snapshots, rfc3339, short_age};
use crate::cli::ListArgs;
use crate::output::print_line;
use anyhow::Result;
use indicatif::HumanBytes;

/// Prints the snapshots as a table or JSON.
pub fn run(env: &Env, args: &ListArgs) -> Result<()> {
    let dests = env.read_dests(args.dest.as_deref())?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for dest in &dests {
        let (_, snaps) = list_snapshots(dest, args.name.as_deref())?;
        rows.extend(snaps.into_iter().map(|s| (dest.clone(), s)));
    }
    if args.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(dest, s)| {
                serde_json::json!({
                    "name": s.key.name,
                    "time": rfc3339(s.key.time),
                    "key": s.key.key(),
                    "size": s.size,
                    "encrypted": s.key.encrypted,
                    "dest": dest,
                })
            })
            .collect();
        return print_line(serde_json::to_string_pretty(&items)?);
    }
    if rows.is_empty() {
        eprintln!("no snapshots in {}", dests.join(", "));
        return Ok(());
    }
    let multi = dests.len() > 1;
    let name_w = rows
        .iter()
        .map(|(_, s)| s.key.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    print_line(format_args!(
        "{:name_w$}  {:20}  {:>8}  {:>10}  {}",
        "NAME",
        "TIME (UTC)",
        "AGE",
        "SIZE",
        if multi { "DEST" } else { "ENC" }
    ))?;
    for (dest, s) in &rows {
        let enc = if s.key.encrypted { "age" } else { "-" };
        print_line(format_args!(
            "{:name_w$}  {:20}  {:>8}  {:>10}  {}",
            s.key.name,
            rfc3339(s.key.time),
            short_age(now, s.key.time),
            HumanBytes(s.size).to_string(),
            if multi {
                format!("{dest} {enc}")
            } else {
                enc.to_string()
            },
        ))?;
    }
    Ok(())
}
