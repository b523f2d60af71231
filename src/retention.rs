//! Snapshot retention planning.
//!
//! Deciding which backups to delete is the one place where a bug destroys
//! data, so this module is pure (no I/O, no clock) and reproduces the rules
//! of restic's `forget` command (as of restic 0.14) exactly, with calendar
//! periods taken in UTC. Users who know restic get no surprises, and the
//! behaviour can be checked against the real binary.
//!
//! Two deliberate differences from restic, both documented where they apply:
//! `keep_within` is a fixed-length duration in humantime syntax rather than
//! restic's calendar-aware `1y2m3d4h` form (the same for hours, days and
//! weeks in UTC, but humantime's months and years are a fixed 30.44 and
//! 365.25 days), and it is measured from the newest snapshot even when that
//! snapshot lies in the future, where restic skips future-dated snapshots.

use std::fmt;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use clap::Args;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which snapshots to keep, shared by the command line and the config file so
/// both spell every rule the same way.
///
/// Rules are ORed: a snapshot survives if any rule keeps it. A count of zero
/// disables its rule, which lets a command-line flag switch off a rule that
/// the config file enables (see [`RetentionPolicy::or`]).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
// Keep this doc comment out of the help of the command that flattens it.
#[command(about = None, long_about = None)]
pub struct RetentionPolicy {
    /// Keep the N newest snapshots whatever their age, so the most recent
    /// states can always be restored.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,

    /// Keep the newest snapshot of each of the last N hours (UTC) that have
    /// snapshots, for fine-grained recent history.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,

    /// Keep the newest snapshot of each of the last N days (UTC) that have
    /// snapshots.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,

    /// Keep the newest snapshot of each of the last N ISO weeks that have
    /// snapshots.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,

    /// Keep the newest snapshot of each of the last N months (UTC) that have
    /// snapshots.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,

    /// Keep the newest snapshot of each of the last N years (UTC) that have
    /// snapshots, for long-term archives.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,

    /// Keep every snapshot taken less than DURATION (e.g. 36h, 10d, 2weeks)
    /// before the newest snapshot. Measured from the newest snapshot, not
    /// from now, so that a backup outage never empties the window.
    #[arg(long, value_name = "DURATION")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_within",
        deserialize_with = "deserialize_within"
    )]
    pub keep_within: Option<humantime::Duration>,
}

impl RetentionPolicy {
    /// Layers `self` over `fallback` field by field, so command-line flags
    /// override the config file one rule at a time instead of replacing the
    /// whole policy. Pass a count of 0 to switch off a configured rule.
    #[must_use]
    pub fn or(self, fallback: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.or(fallback.keep_last),
            keep_hourly: self.keep_hourly.or(fallback.keep_hourly),
            keep_daily: self.keep_daily.or(fallback.keep_daily),
            keep_weekly: self.keep_weekly.or(fallback.keep_weekly),
            keep_monthly: self.keep_monthly.or(fallback.keep_monthly),
            keep_yearly: self.keep_yearly.or(fallback.keep_yearly),
            keep_within: self.keep_within.or(fallback.keep_within),
        }
    }

    /// Tells whether the policy would keep nothing, which callers must treat
    /// as a mistake rather than as "delete every snapshot". Zero counts and a
    /// zero duration count as absent, as in restic.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.periodic_rules().iter().all(|&(_, n, _)| n == 0)
            && self.keep_last.unwrap_or(0) == 0
            && self.within().is_none()
    }

    /// The `keep_within` window, or `None` when the rule is off.
    fn within(&self) -> Option<StdDuration> {
        self.keep_within
            .map(StdDuration::from)
            .filter(|d| !d.is_zero())
    }

    /// The calendar-bucket rules with their counts, in restic's order.
    fn periodic_rules(&self) -> [(Reason, u32, PeriodOf); 5] {
        [
            (Reason::Hourly, self.keep_hourly.unwrap_or(0), hour_of),
            (Reason::Daily, self.keep_daily.unwrap_or(0), day_of),
            (Reason::Weekly, self.keep_weekly.unwrap_or(0), iso_week_of),
            (Reason::Monthly, self.keep_monthly.unwrap_or(0), month_of),
            (Reason::Yearly, self.keep_yearly.unwrap_or(0), year_of),
        ]
    }
}

fn serialize_within<S: Serializer>(
    value: &Option<humantime::Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_some(&d.to_string()),
        None => serializer.serialize_none(),
    }
}

fn deserialize_within<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<humantime::Duration>, D::Error> {
    let raw: Option<String> = Option::deserialize(deserializer)?;
    raw.map(|s| {
        s.parse::<humantime::Duration>().map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid keep_within {s:?}: {e} (expected e.g. \"36h\", \"10d\", \"2weeks\")"
            ))
        })
    })
    .transpose()
}

/// Why a snapshot is kept; reported so users can see which rule protects a
/// snapshot before they change a policy. Serialises to the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Among the `keep_last` newest snapshots.
    Last,
    /// Newest of one of the `keep_hourly` most recent hours with snapshots.
    Hourly,
    /// Newest of one of the `keep_daily` most recent days with snapshots.
    Daily,
    /// Newest of one of the `keep_weekly` most recent ISO weeks with snapshots.
    Weekly,
    /// Newest of one of the `keep_monthly` most recent months with snapshots.
    Monthly,
    /// Newest of one of the `keep_yearly` most recent years with snapshots.
    Yearly,
    /// Inside the `keep_within` window before the newest snapshot.
    Within,
}

impl Reason {
    /// The stable lowercase name, shared by `Display` and serde so text and
    /// JSON output never disagree.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Yearly => "yearly",
            Reason::Within => "within",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict for one input snapshot. It carries the input's position so the
/// caller can map it back to its own item (`items[decision.index]`) without
/// this module knowing the item type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Position of the snapshot in the slice given to [`plan`].
    pub index: usize,
    /// The snapshot's time, repeated here so reports need not look it up.
    pub time: DateTime<Utc>,
    /// Whether the snapshot survives; `false` means it may be deleted.
    pub keep: bool,
    /// Every rule that keeps the snapshot, in [`Reason`] order; empty exactly
    /// when `keep` is false.
    pub reasons: Vec<Reason>,
}

/// What the kept snapshots still cover, so a user can judge a policy (oldest
/// restorable point, worst-case gap) before deleting anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Number of snapshots kept.
    pub count: usize,
    /// Oldest restorable point, `None` when nothing is kept.
    pub oldest: Option<DateTime<Utc>>,
    /// Newest restorable point, `None` when nothing is kept.
    pub newest: Option<DateTime<Utc>>,
    /// Largest interval between consecutive kept snapshots: the most history
    /// that could be lost by restoring; `None` with fewer than two kept.
    /// Serialised as whole seconds because chrono durations have no serde form.
    #[serde(rename = "widest_gap_seconds", serialize_with = "serialize_gap")]
    pub widest_gap: Option<TimeDelta>,
}

fn serialize_gap<S: Serializer>(
    value: &Option<TimeDelta>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_some(&d.num_seconds()),
        None => serializer.serialize_none(),
    }
}

/// The outcome of applying a policy, kept separate from deletion so a dry run
/// and a real run share one code path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// One decision per input snapshot, newest first; snapshots with equal
    /// times are ordered by input position so the verdicts do not depend on
    /// the order the caller listed them in.
    pub decisions: Vec<Decision>,
    /// Summary of the kept snapshots.
    pub coverage: Coverage,
}

impl RetentionPlan {
    /// The snapshots to keep, newest first, for reporting.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The snapshots that may be deleted, newest first, so the caller can
    /// act on them without re-checking `keep`.
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// Refused because a policy without rules would delete every snapshot,
    /// which is almost certainly a missing flag or config entry.
    #[error(
        "the retention policy has no rules, so it would delete every snapshot; \
         give at least one --keep-* option (--keep-last, --keep-hourly, --keep-daily, \
         --keep-weekly, --keep-monthly, --keep-yearly or --keep-within) with a non-zero \
         value, or set the matching keep_* entry in the config file"
    )]
    EmptyPolicy,
}

/// A calendar period label; two snapshots share a period exactly when their
/// labels are equal. Unused trailing fields are zero.
type Period = (i32, u32, u32, u32);

/// Maps a time to the period one calendar rule groups it in.
type PeriodOf = fn(DateTime<Utc>) -> Period;

fn hour_of(t: DateTime<Utc>) -> Period {
    (t.year(), t.month(), t.day(), t.hour())
}

fn day_of(t: DateTime<Utc>) -> Period {
    (t.year(), t.month(), t.day(), 0)
}

/// ISO week-year and week, like restic (`time.ISOWeek`): 2024-12-30 is in
/// 2025-W01 and 2021-01-01 is in 2020-W53.
fn iso_week_of(t: DateTime<Utc>) -> Period {
    let week = t.iso_week();
    (week.year(), week.week(), 0, 0)
}

fn month_of(t: DateTime<Utc>) -> Period {
    (t.year(), t.month(), 0, 0)
}

fn year_of(t: DateTime<Utc>) -> Period {
    (t.year(), 0, 0, 0)
}

/// State of one calendar rule while walking from newest to oldest.
struct Bucket {
    reason: Reason,
    remaining: u32,
    period_of: PeriodOf,
    last_kept: Option<Period>,
}

/// Decides which snapshots of one database to keep under `policy`, with the
/// same results as restic 0.14's `forget` for UTC timestamps.
///
/// Generic over the caller's item type so it can pass its own snapshot
/// records; `time_of` extracts each item's time and each [`Decision`] carries
/// the item's index. For a plain slice of times use `plan(&times, |t| *t,
/// &policy)`. Items may come in any order and may share times.
///
/// Rules, applied walking from newest to oldest, a snapshot being kept if
/// any rule keeps it:
/// - `keep_last` N keeps the N newest;
/// - each calendar rule keeps a snapshot when its hour/day/ISO week/month/year
///   differs from that of the last snapshot the rule kept and the rule has
///   count left, so periods without snapshots do not use up the count;
/// - `keep_within` D keeps every snapshot strictly after `newest - D`
///   (restic uses `After`, so one exactly D older than the newest goes).
///   Unlike restic, which ignores future-dated snapshots when finding the
///   newest, the newest snapshot is used as is, keeping this function
///   independent of the clock.
///
/// The newest snapshot is always kept.
///
/// # Errors
///
/// [`RetentionError::EmptyPolicy`] if the policy has no active rule, even
/// when `items` is empty, so a misconfiguration is reported before it can do
/// harm.
pub fn plan<T>(
    items: &[T],
    time_of: impl Fn(&T) -> DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Result<RetentionPlan, RetentionError> {
    if policy.is_empty() {
        return Err(RetentionError::EmptyPolicy);
    }

    let mut order: Vec<(usize, DateTime<Utc>)> = items
        .iter()
        .enumerate()
        .map(|(index, item)| (index, time_of(item)))
        .collect();
    // Newest first; equal times by input position, so verdicts per time do
    // not depend on input order.
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let keep_last = usize::try_from(policy.keep_last.unwrap_or(0)).unwrap_or(usize::MAX);
    let mut buckets: Vec<Bucket> = policy
        .periodic_rules()
        .into_iter()
        .filter(|&(_, count, _)| count > 0)
        .map(|(reason, count, period_of)| Bucket {
            reason,
            remaining: count,
            period_of,
            last_kept: None,
        })
        .collect();
    let within = within_rule(policy, order.first().map(|&(_, t)| t));

    let mut decisions = Vec::with_capacity(order.len());
    for (position, &(index, time)) in order.iter().enumerate() {
        let mut reasons = Vec::new();
        if position < keep_last {
            reasons.push(Reason::Last);
        }
        for bucket in &mut buckets {
            if bucket.remaining == 0 {
                continue;
            }
            let period = (bucket.period_of)(time);
            if bucket.last_kept != Some(period) {
                bucket.last_kept = Some(period);
                bucket.remaining -= 1;
                reasons.push(bucket.reason);
            }
        }
        if within.keeps(time) {
            reasons.push(Reason::Within);
        }
        decisions.push(Decision {
            index,
            time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }

    // Every active rule keeps the newest snapshot by construction (a bucket
    // starts with no period, and the newest is inside any positive window).
    // Enforce it anyway: losing the latest backup is the worst outcome.
    if let Some(newest) = decisions.first_mut() {
        debug_assert!(newest.keep, "retention rules dropped the newest snapshot");
        newest.keep = true;
    }

    let coverage = coverage_of(&decisions);
    Ok(RetentionPlan {
        decisions,
        coverage,
    })
}

/// The `keep_within` rule resolved against the newest snapshot.
enum Within {
    /// No window configured (or no snapshots).
    Off,
    /// Keep snapshots strictly after this instant.
    After(DateTime<Utc>),
    /// The window reaches past the earliest representable time: keep all.
    Everything,
}

impl Within {
    fn keeps(&self, time: DateTime<Utc>) -> bool {
        match self {
            Within::Off => false,
            Within::After(cutoff) => time > *cutoff,
            Within::Everything => true,
        }
    }
}

fn within_rule(policy: &RetentionPolicy, newest: Option<DateTime<Utc>>) -> Within {
    let (Some(window), Some(newest)) = (policy.within(), newest) else {
        return Within::Off;
    };
    TimeDelta::from_std(window)
        .ok()
        .and_then(|delta| newest.checked_sub_signed(delta))
        .map_or(Within::Everything, Within::After)
}

fn coverage_of(decisions: &[Decision]) -> Coverage {
    let kept: Vec<DateTime<Utc>> = decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.time)
        .collect();
    Coverage {
        count: kept.len(),
        newest: kept.first().copied(),
        oldest: kept.last().copied(),
        widest_gap: kept.windows(2).map(|pair| pair[0] - pair[1]).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ts(list: &[&str]) -> Vec<DateTime<Utc>> {
        list.iter().map(|s| t(s)).collect()
    }

    fn run(times: &[DateTime<Utc>], policy: &RetentionPolicy) -> RetentionPlan {
        let result = plan(times, |x| *x, policy).unwrap();
        assert_newest_kept(&result);
        result
    }

    /// Kept times, newest first.
    fn kept(times: &[DateTime<Utc>], policy: &RetentionPolicy) -> Vec<DateTime<Utc>> {
        run(times, policy).kept().map(|d| d.time).collect()
    }

    fn assert_newest_kept(result: &RetentionPlan) {
        if let Some(first) = result.decisions.first() {
            assert!(first.keep, "newest snapshot not kept: {result:?}");
            let newest = result.decisions.iter().map(|d| d.time).max().unwrap();
            assert_eq!(first.time, newest);
        }
        for d in &result.decisions {
            assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
        }
    }

    fn within(s: &str) -> Option<humantime::Duration> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn weekly_uses_iso_week_year_across_new_year_2021() {
        // 2020-12-31 (Thu), 2021-01-01 (Fri) and 2021-01-03 (Sun) are all in
        // ISO 2020-W53; 2021-01-04 (Mon) starts 2021-W01.
        let times = ts(&[
            "2020-12-31T12:00:00Z",
            "2021-01-01T12:00:00Z",
            "2021-01-03T12:00:00Z",
            "2021-01-04T12:00:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_weekly: Some(10),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &policy),
            ts(&["2021-01-04T12:00:00Z", "2021-01-03T12:00:00Z"])
        );
    }

    #[test]
    fn weekly_puts_2024_12_30_in_2025_w01() {
        let times = ts(&[
            "2024-12-29T12:00:00Z", // Sun, 2024-W52
            "2024-12-30T12:00:00Z", // Mon, 2025-W01
            "2025-01-02T12:00:00Z", // Thu, 2025-W01
        ]);
        let policy = RetentionPolicy {
            keep_weekly: Some(10),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &policy),
            ts(&["2025-01-02T12:00:00Z", "2024-12-29T12:00:00Z"])
        );
        // The calendar year differs but the ISO week does not.
        assert_eq!(
            iso_week_of(t("2024-12-30T00:00:00Z")),
            iso_week_of(t("2025-01-01T00:00:00Z"))
        );
        assert_eq!(iso_week_of(t("2024-12-30T00:00:00Z")), (2025, 1, 0, 0));
    }

    #[test]
    fn year_boundary_splits_hour_day_month_year() {
        let times = ts(&["2020-12-31T23:59:59Z", "2021-01-01T00:00:00Z"]);
        for policy in [
            RetentionPolicy {
                keep_hourly: Some(5),
                ..Default::default()
            },
            RetentionPolicy {
                keep_daily: Some(5),
                ..Default::default()
            },
            RetentionPolicy {
                keep_monthly: Some(5),
                ..Default::default()
            },
            RetentionPolicy {
                keep_yearly: Some(5),
                ..Default::default()
            },
        ] {
            assert_eq!(kept(&times, &policy).len(), 2, "{policy:?}");
        }
        // Same ISO week (2020-W53), so weekly keeps only the newer one.
        let weekly = RetentionPolicy {
            keep_weekly: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(&times, &weekly), ts(&["2021-01-01T00:00:00Z"]));
    }

    #[test]
    fn yearly_keeps_newest_of_each_year() {
        let times = ts(&[
            "2019-03-01T00:00:00Z",
            "2020-01-01T00:00:00Z",
            "2020-12-31T23:59:59Z",
            "2021-01-01T00:00:00Z",
            "2021-06-01T00:00:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_yearly: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &policy),
            ts(&["2021-06-01T00:00:00Z", "2020-12-31T23:59:59Z"])
        );
    }

    #[test]
    fn leap_day_is_its_own_day_in_february() {
        let times = ts(&[
            "2024-02-28T23:59:59Z",
            "2024-02-29T00:00:00Z",
            "2024-02-29T13:30:00Z",
            "2024-03-01T00:00:00Z",
        ]);
        let daily = RetentionPolicy {
            keep_daily: Some(10),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &daily),
            ts(&[
                "2024-03-01T00:00:00Z",
                "2024-02-29T13:30:00Z",
                "2024-02-28T23:59:59Z"
            ])
        );
        let monthly = RetentionPolicy {
            keep_monthly: Some(10),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &monthly),
            ts(&["2024-03-01T00:00:00Z", "2024-02-29T13:30:00Z"])
        );
    }

    #[test]
    fn only_newest_of_a_period_is_kept() {
        let times = ts(&[
            "2023-05-05T10:05:00Z",
            "2023-05-05T10:59:59Z",
            "2023-05-05T10:30:00Z",
            "2023-05-05T09:59:59Z",
            "2023-05-05T11:00:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_hourly: Some(10),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &policy),
            ts(&[
                "2023-05-05T11:00:00Z",
                "2023-05-05T10:59:59Z",
                "2023-05-05T09:59:59Z"
            ])
        );
    }

    #[test]
    fn empty_periods_do_not_use_up_the_count() {
        // Weeks with snapshots: 2023-W01, W05, W09, W20; nothing in between.
        let times = ts(&[
            "2023-01-03T00:00:00Z",
            "2023-01-31T00:00:00Z",
            "2023-02-28T00:00:00Z",
            "2023-05-16T00:00:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_weekly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &policy),
            ts(&[
                "2023-05-16T00:00:00Z",
                "2023-02-28T00:00:00Z",
                "2023-01-31T00:00:00Z"
            ])
        );
        let daily = RetentionPolicy {
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &daily),
            ts(&["2023-05-16T00:00:00Z", "2023-02-28T00:00:00Z"])
        );
    }

    #[test]
    fn within_is_relative_to_newest_and_excludes_exact_boundary() {
        // Far in the past: "now" must play no part.
        let times = ts(&[
            "2000-12-31T12:00:00Z", // exactly newest - 10d
            "2001-01-07T12:00:00Z",
            "2001-01-08T23:59:59Z",
            "2001-01-09T00:00:00Z", // exactly newest - 36h: dropped, as in restic
            "2001-01-09T00:00:01Z",
            "2001-01-10T12:00:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_within: within("36h"),
            ..Default::default()
        };
        let result = run(&times, &policy);
        let kept: Vec<_> = result.kept().map(|d| d.time).collect();
        assert_eq!(kept, ts(&["2001-01-10T12:00:00Z", "2001-01-09T00:00:01Z"]));
        assert!(result.kept().all(|d| d.reasons == vec![Reason::Within]));

        let ten_days = RetentionPolicy {
            keep_within: within("10d"),
            ..Default::default()
        };
        assert_eq!(kept_len(&times, &ten_days), 5);
    }

    fn kept_len(times: &[DateTime<Utc>], policy: &RetentionPolicy) -> usize {
        run(times, policy).coverage.count
    }

    #[test]
    fn within_wider_than_time_itself_keeps_everything() {
        let times = ts(&["1990-01-01T00:00:00Z", "2020-01-01T00:00:00Z"]);
        let policy = RetentionPolicy {
            keep_within: within("300000years"),
            ..Default::default()
        };
        assert_eq!(kept_len(&times, &policy), 2);
    }

    #[test]
    fn combined_rules_report_every_reason() {
        let times = ts(&[
            "2022-06-01T08:00:00Z",
            "2022-06-02T08:00:00Z",
            "2022-06-02T09:00:00Z",
            "2022-06-02T09:30:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_hourly: Some(2),
            keep_daily: Some(2),
            keep_weekly: Some(1),
            keep_monthly: Some(1),
            keep_yearly: Some(1),
            keep_within: within("1h"),
        };
        let result = run(&times, &policy);
        let summary: Vec<(DateTime<Utc>, Vec<Reason>)> = result
            .decisions
            .iter()
            .map(|d| (d.time, d.reasons.clone()))
            .collect();
        use Reason::*;
        assert_eq!(
            summary,
            vec![
                (
                    t("2022-06-02T09:30:00Z"),
                    vec![Last, Hourly, Daily, Weekly, Monthly, Yearly, Within]
                ),
                (t("2022-06-02T09:00:00Z"), vec![Within]),
                (t("2022-06-02T08:00:00Z"), vec![Hourly]),
                (t("2022-06-01T08:00:00Z"), vec![Daily]),
            ]
        );
        assert_eq!(
            result.removed().count(),
            0,
            "every snapshot here has a reason"
        );
    }

    #[test]
    fn empty_policy_is_an_error_not_delete_all() {
        let times = ts(&["2022-06-01T08:00:00Z"]);
        let zeroes = RetentionPolicy {
            keep_last: Some(0),
            keep_hourly: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            keep_yearly: Some(0),
            keep_within: within("0s"),
        };
        for policy in [RetentionPolicy::default(), zeroes] {
            assert!(policy.is_empty());
            assert_eq!(
                plan(&times, |x| *x, &policy),
                Err(RetentionError::EmptyPolicy)
            );
            // Also for no snapshots, so misconfiguration surfaces early.
            assert_eq!(
                plan(&[] as &[DateTime<Utc>], |x| *x, &policy),
                Err(RetentionError::EmptyPolicy)
            );
        }
        let message = RetentionError::EmptyPolicy.to_string();
        assert!(message.contains("at least one --keep-*"), "{message}");
        assert!(
            !RetentionPolicy {
                keep_yearly: Some(1),
                ..Default::default()
            }
            .is_empty()
        );
    }

    #[test]
    fn empty_input_gives_empty_plan() {
        let policy = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        let result = run(&[], &policy);
        assert!(result.decisions.is_empty());
        assert_eq!(result.coverage, Coverage::default());
    }

    #[test]
    fn duplicates_keep_one_per_period_and_lowest_index_wins() {
        let times = ts(&[
            "2022-01-01T00:00:00Z",
            "2022-01-02T00:00:00Z",
            "2022-01-02T00:00:00Z",
        ]);
        let daily = RetentionPolicy {
            keep_daily: Some(5),
            ..Default::default()
        };
        let result = run(&times, &daily);
        let verdicts: Vec<(usize, bool)> =
            result.decisions.iter().map(|d| (d.index, d.keep)).collect();
        assert_eq!(verdicts, vec![(1, true), (2, false), (0, true)]);

        let last = RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &last),
            ts(&["2022-01-02T00:00:00Z", "2022-01-02T00:00:00Z"])
        );
        assert_eq!(
            run(&times, &last).coverage.widest_gap,
            Some(TimeDelta::zero())
        );
    }

    #[test]
    fn decisions_map_back_to_caller_items() {
        struct Snap {
            name: &'static str,
            at: DateTime<Utc>,
        }
        let snaps = [
            Snap {
                name: "old",
                at: t("2020-01-01T00:00:00Z"),
            },
            Snap {
                name: "new",
                at: t("2020-03-01T00:00:00Z"),
            },
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let result = plan(&snaps, |s| s.at, &policy).unwrap();
        let kept: Vec<&str> = result.kept().map(|d| snaps[d.index].name).collect();
        let removed: Vec<&str> = result.removed().map(|d| snaps[d.index].name).collect();
        assert_eq!((kept, removed), (vec!["new"], vec!["old"]));
    }

    #[test]
    fn coverage_summarises_kept_snapshots() {
        let times = ts(&[
            "2020-01-01T00:00:00Z",
            "2020-01-02T00:00:00Z",
            "2020-01-02T06:00:00Z",
            "2020-01-05T00:00:00Z",
            "2020-01-05T01:00:00Z",
        ]);
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            ..Default::default()
        };
        let coverage = run(&times, &policy).coverage;
        assert_eq!(coverage.count, 3);
        assert_eq!(coverage.newest, Some(t("2020-01-05T01:00:00Z")));
        assert_eq!(coverage.oldest, Some(t("2020-01-01T00:00:00Z")));
        assert_eq!(coverage.widest_gap, Some(TimeDelta::hours(67)));
        let single = run(&times[..1], &policy).coverage;
        assert_eq!((single.count, single.widest_gap), (1, None));
    }

    #[test]
    fn overlay_is_field_wise() {
        let cli = RetentionPolicy {
            keep_daily: Some(3),
            keep_weekly: Some(0),
            ..Default::default()
        };
        let config = RetentionPolicy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(6),
            keep_within: within("2days"),
            ..Default::default()
        };
        assert_eq!(
            cli.or(config),
            RetentionPolicy {
                keep_daily: Some(3),
                keep_weekly: Some(0),
                keep_monthly: Some(6),
                keep_within: within("2days"),
                ..Default::default()
            }
        );
    }

    #[test]
    fn config_deserialises_and_rejects_unknown_keys() {
        let policy: RetentionPolicy =
            serde_json::from_str(r#"{"keep_daily": 7, "keep_within": "2weeks"}"#).unwrap();
        assert_eq!(
            policy,
            RetentionPolicy {
                keep_daily: Some(7),
                keep_within: within("14d"),
                ..Default::default()
            }
        );
        let empty: RetentionPolicy = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
        let unknown = serde_json::from_str::<RetentionPolicy>(r#"{"keep_dayly": 7}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
        let bad = serde_json::from_str::<RetentionPolicy>(r#"{"keep_within": "soon"}"#);
        assert!(bad.unwrap_err().to_string().contains("invalid keep_within"));

        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(json, r#"{"keep_daily":7,"keep_within":"14days"}"#);
        assert_eq!(
            serde_json::from_str::<RetentionPolicy>(&json).unwrap(),
            policy
        );
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        policy: RetentionPolicy,
    }

    #[test]
    fn cli_flags_parse() {
        let cli = Cli::try_parse_from([
            "sqlbak",
            "--keep-last",
            "2",
            "--keep-hourly",
            "24",
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
            "--keep-monthly",
            "12",
            "--keep-yearly",
            "3",
            "--keep-within",
            "36h",
        ])
        .unwrap();
        assert_eq!(
            cli.policy,
            RetentionPolicy {
                keep_last: Some(2),
                keep_hourly: Some(24),
                keep_daily: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(12),
                keep_yearly: Some(3),
                keep_within: within("36h"),
            }
        );
        assert!(Cli::try_parse_from(["sqlbak"]).unwrap().policy.is_empty());
        assert!(Cli::try_parse_from(["sqlbak", "--keep-within", "forever"]).is_err());
        assert!(Cli::try_parse_from(["sqlbak", "--keep-daily", "-1"]).is_err());
        let help = Cli::try_parse_from(["sqlbak", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("--keep-within <DURATION>"), "{help}");
        assert!(help.contains("--keep-weekly <N>"), "{help}");
        assert!(
            !help.contains("config file"),
            "type docs leak into help: {help}"
        );
    }

    #[test]
    fn reason_names_are_lowercase() {
        use Reason::*;
        let all = [Last, Hourly, Daily, Weekly, Monthly, Yearly, Within];
        let names: Vec<String> = all.iter().map(Reason::to_string).collect();
        assert_eq!(
            names,
            [
                "last", "hourly", "daily", "weekly", "monthly", "yearly", "within"
            ]
        );
        for reason in all {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{reason}\"")
            );
            assert_eq!(
                serde_json::from_str::<Reason>(&format!("\"{reason}\"")).unwrap(),
                reason
            );
        }
    }

    #[test]
    fn plan_serialises_for_json_reports() {
        let times = ts(&["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"]);
        let policy = RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        let value = serde_json::to_value(run(&times, &policy)).unwrap();
        assert_eq!(value["decisions"][0]["index"], 1);
        assert_eq!(value["decisions"][0]["reasons"][0], "last");
        assert_eq!(value["decisions"][0]["time"], "2020-01-02T00:00:00Z");
        assert_eq!(value["coverage"]["widest_gap_seconds"], 86_400);
        assert_eq!(value["coverage"]["count"], 2);
    }

    // ---- property tests ----

    /// Times spread over about three years, with second-level jitter and a
    /// small pool of values so duplicates and shared periods are common.
    fn arb_times() -> impl Strategy<Value = Vec<DateTime<Utc>>> {
        let base = t("2019-12-20T00:00:00Z").timestamp();
        let one = prop_oneof![
            (0i64..3 * 366 * 24, 0i64..3600).prop_map(|(h, s)| h * 3600 + s),
            (0i64..72).prop_map(|h| h * 3600),
            (0i64..40).prop_map(|d| d * 86_400 + 43_200),
        ];
        prop::collection::vec(one, 0..60).prop_map(move |offsets| {
            offsets
                .into_iter()
                .map(|o| DateTime::from_timestamp(base + o, 0).unwrap())
                .collect()
        })
    }

    fn arb_count() -> impl Strategy<Value = Option<u32>> {
        prop_oneof![Just(None), (0u32..12).prop_map(Some)]
    }

    fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
        (
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            prop_oneof![
                Just(None),
                (0u64..60 * 86_400).prop_map(|s| Some(StdDuration::from_secs(s).into())),
            ],
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within)| RetentionPolicy {
                    keep_last: last,
                    keep_hourly: hourly,
                    keep_daily: daily,
                    keep_weekly: weekly,
                    keep_monthly: monthly,
                    keep_yearly: yearly,
                    keep_within: within,
                },
            )
            .prop_filter("non-empty policy", |p| !p.is_empty())
    }

    /// Kept times as a sorted multiset, comparable across inputs.
    fn kept_multiset(result: &RetentionPlan) -> Vec<DateTime<Utc>> {
        let mut out: Vec<_> = result.kept().map(|d| d.time).collect();
        out.sort();
        out
    }

    fn is_sub_multiset(small: &[DateTime<Utc>], big: &[DateTime<Utc>]) -> bool {
        let mut rest = big.to_vec();
        small
            .iter()
            .all(|x| match rest.iter().position(|y| y == x) {
                Some(i) => {
                    rest.swap_remove(i);
                    true
                }
                None => false,
            })
    }

    proptest! {
        #[test]
        fn prop_newest_always_kept(times in arb_times(), policy in arb_policy()) {
            let result = plan(&times, |x| *x, &policy).unwrap();
            prop_assert_eq!(result.decisions.len(), times.len());
            if let Some(newest) = times.iter().max() {
                prop_assert!(result.decisions[0].keep);
                prop_assert_eq!(result.decisions[0].time, *newest);
                prop_assert_eq!(result.coverage.newest, Some(*newest));
            }
            // Every input index appears exactly once.
            let mut indices: Vec<usize> = result.decisions.iter().map(|d| d.index).collect();
            indices.sort_unstable();
            prop_assert_eq!(indices, (0..times.len()).collect::<Vec<_>>());
        }

        #[test]
        fn prop_growing_a_rule_only_adds(
            times in arb_times(),
            policy in arb_policy(),
            rule in 0usize..7,
            extra in 1u32..6,
        ) {
            let mut bigger = policy.clone();
            let grow = |c: &mut Option<u32>| *c = Some(c.unwrap_or(0) + extra);
            match rule {
                0 => grow(&mut bigger.keep_last),
                1 => grow(&mut bigger.keep_hourly),
                2 => grow(&mut bigger.keep_daily),
                3 => grow(&mut bigger.keep_weekly),
                4 => grow(&mut bigger.keep_monthly),
                5 => grow(&mut bigger.keep_yearly),
                _ => {
                    let old = policy.keep_within.map(StdDuration::from).unwrap_or_default();
                    bigger.keep_within =
                        Some((old + StdDuration::from_secs(u64::from(extra) * 3600)).into());
                }
            }
            let small = plan(&times, |x| *x, &policy).unwrap();
            let large = plan(&times, |x| *x, &bigger).unwrap();
            // Same input order, so compare per decision, not only as sets.
            for (a, b) in small.decisions.iter().zip(&large.decisions) {
                prop_assert_eq!(a.index, b.index);
                prop_assert!(!a.keep || b.keep, "{:?} lost by growing to {:?}", a, bigger);
            }
        }

        #[test]
        fn prop_independent_of_input_order(
            times in arb_times(),
            policy in arb_policy(),
            seed in any::<u64>(),
        ) {
            let mut shuffled = times.clone();
            // Deterministic Fisher-Yates driven by the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let j = usize::try_from(state % (i as u64 + 1)).unwrap();
                shuffled.swap(i, j);
            }
            let a = plan(&times, |x| *x, &policy).unwrap();
            let b = plan(&shuffled, |x| *x, &policy).unwrap();
            let strip = |p: &RetentionPlan| -> Vec<(DateTime<Utc>, bool, Vec<Reason>)> {
                p.decisions.iter().map(|d| (d.time, d.keep, d.reasons.clone())).collect()
            };
            prop_assert_eq!(strip(&a), strip(&b));
            prop_assert_eq!(a.coverage, b.coverage);
            for d in &b.decisions {
                prop_assert_eq!(shuffled[d.index], d.time);
            }
        }

        #[test]
        fn prop_keep_last_alone_keeps_min_n_len(times in arb_times(), n in 1u32..80) {
            let mut distinct = times;
            distinct.sort();
            distinct.dedup();
            let policy = RetentionPolicy { keep_last: Some(n), ..Default::default() };
            let result = plan(&distinct, |x| *x, &policy).unwrap();
            let expected = distinct.len().min(n as usize);
            prop_assert_eq!(result.coverage.count, expected);
            // And they are the newest ones.
            let mut newest_first = distinct.clone();
            newest_first.reverse();
            newest_first.truncate(expected);
            prop_assert_eq!(result.kept().map(|d| d.time).collect::<Vec<_>>(), newest_first);
        }

        #[test]
        fn prop_adding_a_rule_only_adds(
            times in arb_times(),
            a in arb_policy(),
            b in arb_policy(),
        ) {
            let union = a.clone().or(b);
            let base = kept_multiset(&plan(&times, |x| *x, &a).unwrap());
            // Fields of `a` win in `or`, so `union` has all of `a`'s rules
            // unchanged plus any that only `b` sets.
            let added = kept_multiset(&plan(&times, |x| *x, &union).unwrap());
            prop_assert!(is_sub_multiset(&base, &added));
        }
    }
}
