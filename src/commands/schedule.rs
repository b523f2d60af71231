//! `sqlbak schedule`: what a cron expression means, before it is deployed.

use crate::cli::ScheduleArgs;
use crate::exit;
use crate::output::print_line;
use crate::schedule::Schedule;
use crate::timespec;
use anyhow::Result;

/// Prints the next fire times, one RFC 3339 line each, in the schedule's time zone.
pub fn run(args: &ScheduleArgs) -> Result<()> {
    let tz = super::parse_timezone(args.timezone.as_deref())?;
    let schedule = Schedule::parse(&args.expr, tz).map_err(|e| exit::usage(e.to_string()))?;
    let now = chrono::Utc::now();
    let after = match &args.after {
        Some(t) => timespec::parse_instant(t, now).map_err(|e| exit::usage(e.to_string()))?,
        None => now,
    };
    let mut printed = 0;
    for t in schedule.upcoming(after, args.count) {
        let local = t.with_timezone(&tz);
        print_line(local.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
        printed += 1;
    }
    if printed == 0 {
        return Err(exit::nothing(format!(
            "{:?} never fires after {}",
            args.expr,
            super::rfc3339(after)
        ))
        .into());
    }
    Ok(())
}
