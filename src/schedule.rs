//! When the next snapshot is due.
//!
//! A [`Schedule`] is either a cron expression read in an IANA time zone or a
//! fixed interval. Both answer one question, [`Schedule::next_after`], so the
//! scheduler loop never needs to know which kind it holds.
//!
//! # Cron expressions
//!
//! Expressions mean what they mean in a crontab (Vixie cron / cronie,
//! crontab(5)), so a line copied from an existing crontab keeps its meaning:
//!
//! * five fields, `minute hour day-of-month month day-of-week`, or six with a
//!   leading `second` field for sub-minute schedules (five-field expressions
//!   fire at second 0);
//! * `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and comma lists;
//! * three-letter month and day names, case-insensitive (`jan`..`dec`,
//!   `sun`..`sat`), also as range ends;
//! * day-of-week 0 and 7 are both Sunday;
//! * `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`
//!   and `@hourly`;
//! * the Vixie day rule: when both day fields are restricted (neither starts
//!   with `*`) a day matches if *either* matches, so `0 0 13 * fri` fires on
//!   every 13th and on every Friday. When either starts with `*` (including
//!   `*/2`), both must match, which means only the other field restricts.
//!
//! Where this parser departs from cronie it is stricter, because a backup
//! schedule that silently means something else is worse than an error:
//!
//! * a step wider than the field (`*/90` in minutes) is rejected; cronie
//!   accepts it and fires only at the first value;
//! * a day-of-month that never occurs in the chosen months (`0 0 31 2 *`) is
//!   rejected; cronie accepts it and never runs the job;
//! * junk after a valid element (`*x`) is rejected; cronie skips it.
//!
//! Two small extensions are accepted: `sun` at the end of a range means 7,
//! so `fri-sun` works (cronie reads it as 5-0 and rejects it), and macros
//! are matched case-insensitively.
//!
//! # Time zones and daylight saving
//!
//! Cron fields are wall-clock times in the schedule's zone (UTC unless
//! given). Daylight-saving changes follow cron(8) of Vixie cron and cronie,
//! which sorts jobs into two kinds. A *wildcard* job has a minute or hour
//! field starting with `*` (this includes `@hourly`); every other job is a
//! *fixed-time* job.
//!
//! * Spring forward (wall-clock times skipped): a fixed-time job due in the
//!   gap fires once, at the first instant after the change (a 02:30 job fires
//!   at 03:00 new time). Several skipped times, or a skipped time plus the
//!   instant right after the gap, collapse into that single firing. Wildcard
//!   jobs just skip the missing times.
//! * Fall back (wall-clock times repeated): a fixed-time job fires only on
//!   the first pass through the repeated times; a wildcard job fires on both
//!   passes, because it runs "by the clock".
//!
//! The seconds field of a six-field expression does not affect the kind;
//! only minute and hour do, as in cronie. cronie also treats clock jumps over
//! 3 hours as "clock set" and does no catch-up; no daylight-saving change is
//! that large, so that case is not modelled. Zone rules are those compiled
//! into `chrono-tz` (version 0.10 stops applying DST after 2099).
//!
//! # Intervals
//!
//! An interval schedule fires at `anchor + k * interval` for k = 0, 1, 2, ...
//! Times are computed from the anchor, not from the last run, so a slow
//! snapshot never pushes later ones back and a restart with the same anchor
//! keeps the same phase. Intervals are exact durations: `1d` is 24 hours, not
//! "same wall-clock time tomorrow" (use cron for that). `@every <duration>`
//! in [`Schedule::parse`] anchors at the Unix epoch, so `15m` fires at :00,
//! :15, :30 and :45 UTC.
//!
//! # Why not the `cron` crate
//!
//! The `cron` crate follows Quartz, not crontab: it needs the seconds field,
//! numbers days of the week 1-7 from Sunday (so `1-5` is Sunday-Thursday and
//! `0` is an error), always ANDs the two day fields, lacks `@midnight` and
//! `@annually`, skips jobs in a spring-forward gap, runs fixed-time jobs
//! twice in a fall-back overlap, can return a time *before* the start when
//! asked from inside an overlap's second pass, and stops at the year 2100.
//! Its errors are one untyped string. It is used only as an independent check in the tests,
//! on the expressions where both dialects agree.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::{GapInfo, Tz};

/// Calendar search horizon. The Gregorian calendar, weekdays included,
/// repeats every 400 years, so a match that exists at all exists within this
/// window; the bound only guards against looping forever.
const SEARCH_YEARS: i32 = 401;

/// Upper bound on the wall-clock candidates examined per
/// [`Schedule::next_after`] call. Real schedules need two or three; the
/// worst case is a fixed-time job matching every second of a repeated hour,
/// asked from inside the second pass (about 3,600). It exists so that no
/// input can make the search spin.
const MAX_CANDIDATES: usize = 100_000;

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Longest each month can be, with February at 29 so leap days count as
/// reachable.
const MAX_MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Names a field of a cron expression, so an error can point at the exact
/// part the user has to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    /// The optional leading field of a six-field expression.
    Second,
    /// Minute of the hour, 0-59.
    Minute,
    /// Hour of the day, 0-23.
    Hour,
    /// Day of the month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or `jan`..`dec`.
    Month,
    /// Day of the week, 0-7 (0 and 7 are Sunday) or `sun`..`sat`.
    DayOfWeek,
}

impl CronField {
    const fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    /// Accepted names and the value of the first one.
    const fn names(self) -> Option<(&'static [&'static str], u32, &'static str)> {
        match self {
            CronField::Month => Some((&MONTH_NAMES, 1, "jan..dec or 1-12")),
            CronField::DayOfWeek => Some((&DAY_NAMES, 0, "sun..sat or 0-7")),
            _ => None,
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        })
    }
}

/// Why one cron field was rejected. Kept separate from [`ScheduleError`] so
/// callers can react to the kind of mistake without parsing messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// Two commas in a row, or a comma at either end.
    #[error("empty list element")]
    EmptyElement,
    /// An element that fits none of the cron forms, such as `1-` or `*-5`.
    #[error(
        "cannot read {element:?}; expected a number, a name, `*`, a range `a-b`, \
         or a step `*/n` or `a-b/n`"
    )]
    Malformed {
        /// The list element as written.
        element: String,
    },
    /// A word in a field that only takes numbers.
    #[error("{token:?} is not a number")]
    NotANumber {
        /// The offending token.
        token: String,
    },
    /// A word that is not one of the field's three-letter names.
    #[error("unknown name {name:?} (use {valid})")]
    UnknownName {
        /// The offending token.
        name: String,
        /// What the field accepts.
        valid: &'static str,
    },
    /// A number outside the field's range.
    #[error("value {value} out of range {min}-{max}")]
    OutOfRange {
        /// The number as written (it may not fit an integer).
        value: String,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
    /// A range whose start is after its end; cron ranges never wrap around.
    #[error("range {start}-{end} runs backwards; cron ranges do not wrap around")]
    ReversedRange {
        /// Start of the range.
        start: u32,
        /// End of the range.
        end: u32,
    },
    /// A step that is missing, zero or not a number.
    #[error("step {step:?} is not a whole number of at least 1")]
    BadStep {
        /// The step as written.
        step: String,
    },
    /// A step so wide it can only ever select one value, which is never what
    /// the author meant (`*/90` in minutes would mean "minute 0").
    #[error(
        "step {step} exceeds the field's span {min}-{max}, so it would select only one value; \
         for longer periods use an interval such as \"@every 90m\""
    )]
    StepTooLarge {
        /// The step as written.
        step: u32,
        /// Smallest value of the field.
        min: u32,
        /// Largest value of the field.
        max: u32,
    },
    /// A step after a single value, which crontab rejects (`5/15`).
    #[error("a step needs a range or `*` before it; write {suggestion:?}")]
    StepWithoutRange {
        /// The likely intended element.
        suggestion: String,
    },
    /// No chosen day of the month exists in any chosen month, so the
    /// schedule could never fire (`0 0 31 2 *`).
    #[error("none of these days occurs in the selected months, so the schedule would never fire")]
    NeverFires,
}

/// Why an interval was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntervalProblem {
    /// The text is not a humantime duration such as `15m` or `1h 30m`.
    #[error(transparent)]
    Parse(#[from] humantime::DurationError),
    /// Below cron's own resolution of one second; almost certainly a typo.
    #[error("interval must be at least one second")]
    TooShort,
    /// Too long to add to a timestamp.
    #[error("interval is too long")]
    TooLong,
}

/// Why a schedule could not be built. Every message quotes the input and, for
/// cron, names the field and the reason, because the message usually ends up
/// in front of whoever edits the configuration file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing but whitespace.
    #[error(
        "invalid cron expression {expr:?}: the expression is empty; expected 5 fields \
         (minute hour day-of-month month day-of-week), 6 with a leading second field, \
         or a macro such as @daily"
    )]
    Empty {
        /// The input as given.
        expr: String,
    },
    /// Neither five nor six fields.
    #[error(
        "invalid cron expression {expr:?}: got {found} field{plural}, expected 5 \
         (minute hour day-of-month month day-of-week) or 6 \
         (second minute hour day-of-month month day-of-week)",
        plural = if *found == 1 { "" } else { "s" }
    )]
    FieldCount {
        /// The input as given.
        expr: String,
        /// How many whitespace-separated fields it had.
        found: usize,
    },
    /// One field is wrong.
    #[error("invalid cron expression {expr:?}: {field} field {text:?}: {problem}")]
    Field {
        /// The input as given.
        expr: String,
        /// Which field.
        field: CronField,
        /// The field as written.
        text: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// An `@` word that is not a known macro.
    #[error(
        "invalid cron expression {expr:?}: unknown macro {name:?}; expected one of @yearly, \
         @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>"
    )]
    UnknownMacro {
        /// The input as given.
        expr: String,
        /// The macro as written.
        name: String,
    },
    /// `@reboot` means "when the daemon starts", which is not a time.
    #[error(
        "invalid cron expression {expr:?}: @reboot means \"when the daemon starts\", \
         which has no fire times"
    )]
    Reboot {
        /// The input as given.
        expr: String,
    },
    /// A macro followed by more fields.
    #[error("invalid cron expression {expr:?}: {name} takes no further fields")]
    MacroWithFields {
        /// The input as given.
        expr: String,
        /// The macro as written.
        name: String,
    },
    /// The interval of `@every` or [`Schedule::every`] is unusable.
    #[error("invalid interval {text:?}: {problem}")]
    Interval {
        /// The interval as given.
        text: String,
        /// What is wrong with it.
        problem: IntervalProblem,
    },
}

/// When snapshots are taken. Built once from configuration, then asked for
/// fire times as the scheduler loop advances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Cron(CronSpec),
    Interval {
        every: TimeDelta,
        anchor: DateTime<Utc>,
    },
}

/// A parsed cron expression. Each field is a bit set, bit `v` standing for
/// value `v`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CronSpec {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Bits 0-6, Sunday = 0 (a 7 in the expression is folded into 0).
    days_of_week: u64,
    /// Day-of-month field does not start with `*`.
    dom_restricted: bool,
    /// Day-of-week field does not start with `*`.
    dow_restricted: bool,
    /// Neither minute nor hour starts with `*` (cron(8)'s non-wildcard job).
    fixed_time: bool,
    tz: Tz,
}

impl Schedule {
    /// Parses a cron expression (five or six fields, or a macro) read in
    /// `tz`, or `@every <duration>` anchored at the Unix epoch.
    ///
    /// Errors are reported here rather than at fire time so a bad
    /// configuration fails at startup, including expressions that could
    /// never fire.
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty {
                expr: expr.to_owned(),
            });
        }
        if trimmed.starts_with('@') {
            return Self::parse_macro(expr, trimmed, tz);
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let all: [&str; 6] = match fields.as_slice() {
            [m, h, dom, mon, dow] => ["0", m, h, dom, mon, dow],
            [s, m, h, dom, mon, dow] => [s, m, h, dom, mon, dow],
            other => {
                return Err(ScheduleError::FieldCount {
                    expr: expr.to_owned(),
                    found: other.len(),
                });
            }
        };
        Ok(Schedule {
            source: trimmed.to_owned(),
            kind: Kind::Cron(CronSpec::from_fields(expr, all, tz)?),
        })
    }

    /// Builds an interval schedule firing at `anchor + k * interval`
    /// (k >= 0), where `interval` is a humantime duration such as `15m` or
    /// `1h 30m`.
    ///
    /// The anchor fixes the phase: pass the same instant on every start (a
    /// configured start time, or the Unix epoch) and restarts do not shift
    /// the series.
    pub fn every(interval: &str, anchor: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
        let every = parse_interval(interval)?;
        Ok(Schedule {
            source: format!("@every {}", interval.trim()),
            kind: Kind::Interval { every, anchor },
        })
    }

    /// The first fire time strictly after `after`, or `None` when there is
    /// none representable. Strictness lets a caller feed back the time it
    /// just fired at without firing twice.
    ///
    /// The search skips non-matching months whole and jumps straight to the
    /// next matching hour, minute and second, so even a leap-day schedule
    /// costs a few hundred cheap steps rather than a scan of every minute.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(spec) => spec.next_after(after),
            Kind::Interval { every, anchor } => next_interval(*every, *anchor, after),
        }
    }

    /// The next `count` fire times after `after`, for status output and
    /// tests that want to see a schedule's shape rather than one instant.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Upcoming<'_> {
        Upcoming {
            schedule: self,
            cursor: Some(after),
            remaining: count,
        }
    }

    fn parse_macro(expr: &str, trimmed: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let (name, args) = match trimmed.split_once(char::is_whitespace) {
            Some((name, args)) => (name, args.trim()),
            None => (trimmed, ""),
        };
        let expansion = match name.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@every" => {
                let every = parse_interval(args)?;
                return Ok(Schedule {
                    source: trimmed.to_owned(),
                    kind: Kind::Interval {
                        every,
                        anchor: DateTime::UNIX_EPOCH,
                    },
                });
            }
            "@reboot" => {
                return Err(ScheduleError::Reboot {
                    expr: expr.to_owned(),
                });
            }
            _ => {
                return Err(ScheduleError::UnknownMacro {
                    expr: expr.to_owned(),
                    name: name.to_owned(),
                });
            }
        };
        if !args.is_empty() {
            return Err(ScheduleError::MacroWithFields {
                expr: expr.to_owned(),
                name: name.to_owned(),
            });
        }
        let mut fields = ["0"; 6];
        for (slot, text) in fields[1..].iter_mut().zip(expansion.split(' ')) {
            *slot = text;
        }
        Ok(Schedule {
            source: trimmed.to_owned(),
            kind: Kind::Cron(CronSpec::from_fields(expr, fields, tz)?),
        })
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Parses in UTC, the default zone, so configuration without a zone
    /// behaves the same on every host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s, Tz::UTC)
    }
}

impl fmt::Display for Schedule {
    /// Shows the expression as written, which is what users recognise in
    /// logs and status output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Iterator over upcoming fire times, returned by [`Schedule::upcoming`].
/// A named type so callers can store it.
#[derive(Debug, Clone)]
pub struct Upcoming<'a> {
    schedule: &'a Schedule,
    cursor: Option<DateTime<Utc>>,
    remaining: usize,
}

impl Iterator for Upcoming<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        if self.remaining == 0 {
            return None;
        }
        let next = self.schedule.next_after(self.cursor?);
        self.cursor = next;
        self.remaining = if next.is_some() {
            self.remaining - 1
        } else {
            0
        };
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

fn parse_interval(text: &str) -> Result<TimeDelta, ScheduleError> {
    let error = |problem| ScheduleError::Interval {
        text: text.to_owned(),
        problem,
    };
    let std = humantime::parse_duration(text.trim()).map_err(|e| error(e.into()))?;
    let every = TimeDelta::from_std(std).map_err(|_| error(IntervalProblem::TooLong))?;
    if every < TimeDelta::seconds(1) {
        return Err(error(IntervalProblem::TooShort));
    }
    Ok(every)
}

fn next_interval(
    every: TimeDelta,
    anchor: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if after < anchor {
        return Some(anchor);
    }
    const NANOS: i128 = 1_000_000_000;
    let nanos = |d: TimeDelta| i128::from(d.num_seconds()) * NANOS + i128::from(d.subsec_nanos());
    let step = nanos(every);
    let k = nanos(after.signed_duration_since(anchor)) / step + 1;
    let offset = k.checked_mul(step)?;
    let secs = i64::try_from(offset / NANOS).ok()?;
    let subsec = u32::try_from(offset % NANOS).ok()?;
    anchor.checked_add_signed(TimeDelta::new(secs, subsec)?)
}

impl CronSpec {
    fn from_fields(expr: &str, texts: [&str; 6], tz: Tz) -> Result<CronSpec, ScheduleError> {
        let [sec, min, hour, dom, month, dow] = texts;
        let field_error = |field: CronField, text: &str, problem| ScheduleError::Field {
            expr: expr.to_owned(),
            field,
            text: text.to_owned(),
            problem,
        };
        let parse =
            |field, text: &str| parse_field(field, text).map_err(|p| field_error(field, text, p));
        let seconds = parse(CronField::Second, sec)?;
        let minutes = parse(CronField::Minute, min)?;
        let hours = parse(CronField::Hour, hour)?;
        let days_of_month = parse(CronField::DayOfMonth, dom)?;
        let months = parse(CronField::Month, month)?;
        let mut days_of_week = parse(CronField::DayOfWeek, dow)?;
        if has(days_of_week, 7) {
            days_of_week |= 1;
        }
        days_of_week &= 0x7f;

        let spec = CronSpec {
            seconds,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_restricted: !dom.starts_with('*'),
            dow_restricted: !dow.starts_with('*'),
            fixed_time: !min.starts_with('*') && !hour.starts_with('*'),
            tz,
        };
        // With the OR rule a restricted weekday fires in every month. With
        // the AND rule every weekday eventually falls on any real date, so
        // the only impossible case is a day-of-month no chosen month has.
        let and_rule = !(spec.dom_restricted && spec.dow_restricted);
        let reachable = (1..=12u32).any(|month| {
            has(months, month) && {
                let days = MAX_MONTH_DAYS[(month - 1) as usize];
                days_of_month & ((1u64 << (days + 1)) - 1) != 0
            }
        });
        if and_rule && !reachable {
            return Err(field_error(
                CronField::DayOfMonth,
                dom,
                FieldProblem::NeverFires,
            ));
        }
        Ok(spec)
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = has(self.days_of_month, date.day());
        let dow = has(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Whether a wall-clock time matches, ignoring daylight saving.
    #[cfg(test)]
    fn matches(&self, t: NaiveDateTime) -> bool {
        has(self.months, t.month())
            && self.day_matches(t.date())
            && has(self.hours, t.hour())
            && has(self.minutes, t.minute())
            && has(self.seconds, t.second())
    }

    /// Earliest time of day at or after `floor` (hour, minute, second) that
    /// matches the time fields.
    fn time_from(&self, (h0, m0, s0): (u32, u32, u32)) -> Option<(u32, u32, u32)> {
        let first_s = next_bit(self.seconds, 0)?;
        let first_m = next_bit(self.minutes, 0)?;
        let h = next_bit(self.hours, h0)?;
        if h > h0 {
            return Some((h, first_m, first_s));
        }
        if let Some(m) = next_bit(self.minutes, m0) {
            if m > m0 {
                return Some((h, m, first_s));
            }
            if let Some(s) = next_bit(self.seconds, s0) {
                return Some((h, m, s));
            }
            if let Some(m) = next_bit(self.minutes, m0 + 1) {
                return Some((h, m, first_s));
            }
        }
        Some((next_bit(self.hours, h0 + 1)?, first_m, first_s))
    }

    /// Earliest wall-clock time at or after `from` (whole seconds) that
    /// matches, skipping whole months and days that cannot.
    fn next_match(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let last_year = from.year().checked_add(SEARCH_YEARS)?;
        let mut date = from.date();
        let mut floor = (from.hour(), from.minute(), from.second());
        while date.year() <= last_year {
            if !has(self.months, date.month()) {
                date = first_of_next_month(date)?;
                floor = (0, 0, 0);
                continue;
            }
            if self.day_matches(date)
                && let Some((h, m, s)) = self.time_from(floor)
            {
                return date.and_hms_opt(h, m, s);
            }
            date = date.succ_opt()?;
            floor = (0, 0, 0);
        }
        None
    }

    /// Earliest fire time after `after`, under the daylight-saving rules in
    /// the module docs.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local_after = after.with_timezone(&self.tz);
        // Checked, unlike `naive_local`, which panics at the ends of time.
        let start = after
            .naive_utc()
            .checked_add_offset(local_after.offset().fix())?;
        let mut best = self.walk(start.with_nanosecond(0)?, after);
        // When `after` is on the first pass of an overlap, the second pass
        // (earlier wall-clock times, later instants) is still ahead and the
        // walk above never looked at it. Only wildcard jobs fire there.
        if !self.fixed_time
            && let LocalResult::Ambiguous(first, second) = self.tz.from_local_datetime(&start)
            && first == local_after
            && let Some(again) = self.second_pass_fire(start, second.signed_duration_since(first))
            && again > after
            && best.is_none_or(|b| again < b)
        {
            best = Some(again);
        }
        best
    }

    /// Walks matching wall-clock times from `from` onwards and returns the
    /// earliest instant after `after` at which one of them fires.
    ///
    /// The smallest instant after `after` that a wall-clock time denotes
    /// grows with the wall-clock time (a gap maps to its end, an overlap's
    /// first pass precedes everything later), so the walk stops at the first
    /// candidate that cannot beat the best so far. That is usually the
    /// second candidate.
    fn walk(&self, mut from: NaiveDateTime, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.tz;
        let one_second = TimeDelta::seconds(1);
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_CANDIDATES {
            let Some(naive) = self.next_match(from) else {
                break;
            };
            let step = naive.checked_add_signed(one_second);
            // The instants this wall-clock time denotes, whether the job
            // fires at each, and where to continue.
            let (instants, fires, resume) = match tz.from_local_datetime(&naive) {
                LocalResult::Single(t) => ([Some(t), None], [true, false], step),
                LocalResult::Ambiguous(first, second) => {
                    ([Some(first), Some(second)], [true, !self.fixed_time], step)
                }
                LocalResult::None => match GapInfo::new(&naive, &tz).and_then(|gap| gap.end) {
                    // Every time in the gap maps to the gap's end, so skip
                    // straight past it.
                    Some(end) => {
                        let resume = end.naive_local();
                        let resume = if resume > naive { Some(resume) } else { step };
                        ([Some(end), None], [self.fixed_time, false], resume)
                    }
                    None => ([None, None], [false, false], step),
                },
            };
            let instants = instants.map(|t| t.map(|t| t.with_timezone(&Utc)));
            let lowest = instants.iter().flatten().filter(|t| **t > after).min();
            if let (Some(lowest), Some(best)) = (lowest, best)
                && *lowest >= best
            {
                break;
            }
            for (t, fires) in instants.into_iter().zip(fires) {
                if let Some(t) = t.filter(|t| fires && *t > after)
                    && best.is_none_or(|b| t < b)
                {
                    best = Some(t);
                }
            }
            match resume {
                Some(next) => from = next,
                None => break,
            }
        }
        best
    }

    /// For `local` on the first pass of an overlap lasting `overlap`, the
    /// second-pass instant of the first matching time in the repeated range.
    fn second_pass_fire(&self, local: NaiveDateTime, overlap: TimeDelta) -> Option<DateTime<Utc>> {
        let repeated = |t: &NaiveDateTime| {
            matches!(self.tz.from_local_datetime(t), LocalResult::Ambiguous(..))
        };
        // Bisect for the first repeated second: `hi` is repeated and `lo`,
        // one overlap earlier, is not.
        let mut hi = local.with_nanosecond(0)?;
        let mut lo = hi.checked_sub_signed(overlap)?;
        loop {
            let half = hi.signed_duration_since(lo).num_seconds() / 2;
            if half == 0 {
                break;
            }
            let mid = lo.checked_add_signed(TimeDelta::seconds(half))?;
            if repeated(&mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        match self.tz.from_local_datetime(&self.next_match(hi)?) {
            LocalResult::Ambiguous(_, second) => Some(second.with_timezone(&Utc)),
            _ => None,
        }
    }
}

fn parse_field(field: CronField, text: &str) -> Result<u64, FieldProblem> {
    let (min, max) = field.bounds();
    let mut bits = 0u64;
    for element in text.split(',') {
        if element.is_empty() {
            return Err(FieldProblem::EmptyElement);
        }
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step, min, max)?)),
            None => (element, None),
        };
        let malformed = || FieldProblem::Malformed {
            element: element.to_owned(),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = parse_value(field, a).ok_or_else(malformed)??;
            let mut hi = parse_value(field, b).ok_or_else(malformed)??;
            // `sun` closing a range that starts later in the week means 7,
            // so `fri-sun` reads naturally (cronie rejects it as 5-0).
            // `sun-sun` stays Sunday only, as in cronie.
            if field == CronField::DayOfWeek
                && hi == 0
                && lo > 0
                && b.chars().all(|c| c.is_ascii_alphabetic())
            {
                hi = 7;
            }
            if lo > hi {
                return Err(FieldProblem::ReversedRange { start: lo, end: hi });
            }
            (lo, hi)
        } else {
            let value = parse_value(field, range).ok_or_else(malformed)??;
            if let Some(step) = step {
                return Err(FieldProblem::StepWithoutRange {
                    suggestion: format!("{range}-{max}/{step}"),
                });
            }
            (value, value)
        };
        let step = step.unwrap_or(1);
        let mut value = lo;
        while value <= hi {
            bits |= 1u64 << value;
            value += step;
        }
    }
    Ok(bits)
}

/// Reads one number or name. The outer `None` means the token is not a
/// number or word at all (empty, `*`, stray punctuation), which the caller
/// reports as a malformed element.
fn parse_value(field: CronField, token: &str) -> Option<Result<u32, FieldProblem>> {
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let (min, max) = field.bounds();
    if token.chars().all(|c| c.is_ascii_digit()) {
        let out_of_range = || FieldProblem::OutOfRange {
            value: token.to_owned(),
            min,
            max,
        };
        return Some(match token.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(out_of_range()),
        });
    }
    let Some((names, base, valid)) = field.names() else {
        return Some(Err(FieldProblem::NotANumber {
            token: token.to_owned(),
        }));
    };
    let found = names.iter().position(|n| n.eq_ignore_ascii_case(token));
    Some(match found {
        Some(i) => Ok(base + i as u32),
        None => Err(FieldProblem::UnknownName {
            name: token.to_owned(),
            valid,
        }),
    })
}

fn parse_step(text: &str, min: u32, max: u32) -> Result<u32, FieldProblem> {
    let bad = || FieldProblem::BadStep {
        step: text.to_owned(),
    };
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(0) => Err(bad()),
        Ok(step) if step <= max - min => Ok(step),
        Ok(step) => Err(FieldProblem::StepTooLarge { step, min, max }),
        Err(_) => Err(FieldProblem::StepTooLarge {
            step: u32::MAX,
            min,
            max,
        }),
    }
}

fn has(bits: u64, value: u32) -> bool {
    value < 64 && bits & (1u64 << value) != 0
}

/// Smallest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits & (u64::MAX << from);
    (rest != 0).then(|| rest.trailing_zeros())
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia, Australia, Europe};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad test timestamp {s:?}: {e}"))
            .with_timezone(&Utc)
    }

    fn fmt(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn sched(expr: &str, tz: Tz) -> Schedule {
        Schedule::parse(expr, tz).unwrap_or_else(|e| panic!("{e}"))
    }

    fn spec(s: &Schedule) -> &CronSpec {
        match &s.kind {
            Kind::Cron(spec) => spec,
            Kind::Interval { .. } => panic!("not a cron schedule"),
        }
    }

    /// Expression, zone, start instant, and the fire times expected after it.
    type Case = (&'static str, Tz, &'static str, &'static [&'static str]);

    const UTC: Tz = Tz::UTC;
    const NY: Tz = America::New_York;
    const LONDON: Tz = Europe::London;

    #[rustfmt::skip]
    const REFERENCE: &[Case] = &[
        // Both day fields restricted: either may match (crontab(5)).
        ("0 0 13 * fri", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-05T00:00:00Z", "2024-01-12T00:00:00Z", "2024-01-13T00:00:00Z",
            "2024-01-19T00:00:00Z", "2024-01-26T00:00:00Z", "2024-02-02T00:00:00Z",
            "2024-02-09T00:00:00Z", "2024-02-13T00:00:00Z", "2024-02-16T00:00:00Z",
        ]),
        // A Friday the 13th fires once.
        ("0 0 13 * fri", UTC, "2024-09-06T00:00:00Z", &[
            "2024-09-13T00:00:00Z", "2024-09-20T00:00:00Z", "2024-09-27T00:00:00Z",
            "2024-10-04T00:00:00Z",
        ]),
        // The crontab(5) example: 04:30 on the 1st, the 15th and every Friday.
        ("30 4 1,15 * 5", UTC, "2024-03-01T00:00:00Z", &[
            "2024-03-01T04:30:00Z", "2024-03-08T04:30:00Z", "2024-03-15T04:30:00Z",
            "2024-03-22T04:30:00Z", "2024-03-29T04:30:00Z", "2024-04-01T04:30:00Z",
            "2024-04-05T04:30:00Z",
        ]),
        // OR rule reaches days the month field alone could not: Feb Mondays.
        ("0 0 31 2 mon", UTC, "2024-01-01T00:00:00Z", &[
            "2024-02-05T00:00:00Z", "2024-02-12T00:00:00Z", "2024-02-19T00:00:00Z",
            "2024-02-26T00:00:00Z", "2025-02-03T00:00:00Z",
        ]),
        // One side `*`: only the other restricts.
        ("0 0 * * mon", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z", "2024-01-22T00:00:00Z",
            "2024-01-29T00:00:00Z",
        ]),
        ("0 0 13 * *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-13T00:00:00Z", "2024-02-13T00:00:00Z", "2024-03-13T00:00:00Z",
        ]),
        // `*/2` starts with `*`, so the fields AND: Mondays on odd days.
        ("0 0 */2 * mon", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-15T00:00:00Z", "2024-01-29T00:00:00Z", "2024-02-05T00:00:00Z",
            "2024-02-19T00:00:00Z", "2024-03-11T00:00:00Z",
        ]),
        // `1-31` does not start with `*`, so the fields OR: every day.
        ("0 0 1-31 * mon", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z",
        ]),
        // Month ends: the 31st skips 30-day months and February.
        ("0 0 31 * *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-31T00:00:00Z", "2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z",
            "2024-07-31T00:00:00Z", "2024-08-31T00:00:00Z", "2024-10-31T00:00:00Z",
            "2024-12-31T00:00:00Z",
        ]),
        // Leap days, including the skipped century year 2100.
        ("0 0 29 2 *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z",
        ]),
        ("0 0 29 2 *", UTC, "2096-03-01T00:00:00Z", &[
            "2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z",
        ]),
        // Leap day that must also be a Sunday: 40 years apart across 2100.
        ("0 0 29 2 */7", UTC, "2060-03-01T00:00:00Z", &[
            "2088-02-29T00:00:00Z", "2128-02-29T00:00:00Z",
        ]),
        // Names in any case, in lists and ranges.
        ("0 12 * JAN,jul Mon-wed", UTC, "2024-01-30T00:00:00Z", &[
            "2024-01-30T12:00:00Z", "2024-01-31T12:00:00Z", "2024-07-01T12:00:00Z",
            "2024-07-02T12:00:00Z", "2024-07-03T12:00:00Z",
        ]),
        ("0 6 * * SUN", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-07T06:00:00Z", "2024-01-14T06:00:00Z",
        ]),
        // 0 and 7 are both Sunday.
        ("0 6 * * 7", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-07T06:00:00Z", "2024-01-14T06:00:00Z",
        ]),
        ("0 6 * * 0,7", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-07T06:00:00Z", "2024-01-14T06:00:00Z",
        ]),
        ("0 6 * * 5-7", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-05T06:00:00Z", "2024-01-06T06:00:00Z", "2024-01-07T06:00:00Z",
            "2024-01-12T06:00:00Z",
        ]),
        ("0 6 * * sun-sun", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-07T06:00:00Z", "2024-01-14T06:00:00Z",
        ]),
        ("0 6 * * fri-sun", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-05T06:00:00Z", "2024-01-06T06:00:00Z", "2024-01-07T06:00:00Z",
            "2024-01-12T06:00:00Z",
        ]),
        // `*/2` over 0-7 is Sun, Tue, Thu, Sat; `1-7/2` is Mon, Wed, Fri, Sun.
        ("0 0 * * */2", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-02T00:00:00Z", "2024-01-04T00:00:00Z", "2024-01-06T00:00:00Z",
            "2024-01-07T00:00:00Z",
        ]),
        ("0 0 * * 1-7/2", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-03T00:00:00Z", "2024-01-05T00:00:00Z", "2024-01-07T00:00:00Z",
            "2024-01-08T00:00:00Z",
        ]),
        // Macros (2024-01-01 is a Monday).
        ("@yearly", UTC, "2024-01-01T00:00:00Z", &["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]),
        ("@annually", UTC, "2024-01-01T00:00:00Z", &["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]),
        ("@monthly", UTC, "2024-01-01T00:00:00Z", &["2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"]),
        ("@weekly", UTC, "2024-01-01T00:00:00Z", &["2024-01-07T00:00:00Z", "2024-01-14T00:00:00Z"]),
        ("@daily", UTC, "2024-01-01T00:00:00Z", &["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]),
        ("@midnight", UTC, "2024-01-01T00:00:00Z", &["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]),
        ("@hourly", UTC, "2024-01-01T00:00:00Z", &["2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"]),
        ("@Daily", UTC, "2024-01-01T00:00:00Z", &["2024-01-02T00:00:00Z"]),
        ("@daily", NY, "2024-01-01T00:00:00Z", &["2024-01-01T05:00:00Z", "2024-01-02T05:00:00Z"]),
        // Steps and ranges.
        ("*/15 * * * *", UTC, "2024-01-01T00:07:30Z", &[
            "2024-01-01T00:15:00Z", "2024-01-01T00:30:00Z", "2024-01-01T00:45:00Z",
            "2024-01-01T01:00:00Z",
        ]),
        ("0 9-17/4 * * 1-5", UTC, "2024-01-05T12:00:00Z", &[
            "2024-01-05T13:00:00Z", "2024-01-05T17:00:00Z", "2024-01-08T09:00:00Z",
            "2024-01-08T13:00:00Z", "2024-01-08T17:00:00Z", "2024-01-09T09:00:00Z",
        ]),
        ("5-30/10 */6 * * *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-01T00:05:00Z", "2024-01-01T00:15:00Z", "2024-01-01T00:25:00Z",
            "2024-01-01T06:05:00Z",
        ]),
        ("0 0 1 */3 *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-04-01T00:00:00Z", "2024-07-01T00:00:00Z", "2024-10-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        ]),
        ("59 23 31 12 *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-12-31T23:59:00Z", "2025-12-31T23:59:00Z",
        ]),
        // Six fields: leading seconds.
        ("*/20 * * * * *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-01T00:00:20Z", "2024-01-01T00:00:40Z", "2024-01-01T00:01:00Z",
        ]),
        ("30 0 12 * * *", UTC, "2024-01-01T00:00:00Z", &[
            "2024-01-01T12:00:30Z", "2024-01-02T12:00:30Z",
        ]),
        ("0 30 2 * * *", NY, "2024-03-09T12:00:00Z", &[
            "2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z",
        ]),
        // A zone without daylight saving.
        ("0 9 * * *", Asia::Tokyo, "2024-01-01T00:00:00Z", &[
            "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z",
        ]),
        // New York, spring forward 2024-03-10 02:00 EST -> 03:00 EDT: the
        // skipped 02:00 job runs at 03:00 EDT (07:00Z).
        ("0 2 * * *", NY, "2024-03-08T12:00:00Z", &[
            "2024-03-09T07:00:00Z", "2024-03-10T07:00:00Z", "2024-03-11T06:00:00Z",
            "2024-03-12T06:00:00Z",
        ]),
        // Fall back 2024-11-03 02:00 EDT -> 01:00 EST: 02:00 exists once.
        ("0 2 * * *", NY, "2024-11-01T12:00:00Z", &[
            "2024-11-02T06:00:00Z", "2024-11-03T07:00:00Z", "2024-11-04T07:00:00Z",
        ]),
        // Fixed-time job in the repeated hour runs on the first pass only.
        ("30 1 * * *", NY, "2024-11-02T12:00:00Z", &[
            "2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z",
        ]),
        // ... also when asked from inside the second pass.
        ("30 1 * * *", NY, "2024-11-03T06:10:00Z", &["2024-11-04T06:30:00Z"]),
        // Wildcard job runs on both passes.
        ("30 * * * *", NY, "2024-11-03T04:00:00Z", &[
            "2024-11-03T04:30:00Z", "2024-11-03T05:30:00Z", "2024-11-03T06:30:00Z",
            "2024-11-03T07:30:00Z",
        ]),
        // Wildcard job skips the missing times.
        ("*/30 * * * *", NY, "2024-03-10T06:00:00Z", &[
            "2024-03-10T06:30:00Z", "2024-03-10T07:00:00Z", "2024-03-10T07:30:00Z",
        ]),
        // Several skipped times collapse into one catch-up run.
        ("15,45 2 * * *", NY, "2024-03-09T12:00:00Z", &[
            "2024-03-10T07:00:00Z", "2024-03-11T06:15:00Z", "2024-03-11T06:45:00Z",
        ]),
        // A skipped time plus the instant after the gap: one run.
        ("0 2,3 * * *", NY, "2024-03-09T12:00:00Z", &[
            "2024-03-10T07:00:00Z", "2024-03-11T06:00:00Z", "2024-03-11T07:00:00Z",
        ]),
        // London, spring forward 2024-03-31 01:00 GMT -> 02:00 BST.
        ("30 1 * * *", LONDON, "2024-03-30T12:00:00Z", &[
            "2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z",
        ]),
        // London, fall back 2024-10-27 02:00 BST -> 01:00 GMT.
        ("30 1 * * *", LONDON, "2024-10-26T12:00:00Z", &[
            "2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z",
        ]),
        // Wildcard minute, asked from the first instant of the first pass.
        ("*/20 1 * * *", LONDON, "2024-10-27T00:00:00Z", &[
            "2024-10-27T00:20:00Z", "2024-10-27T00:40:00Z", "2024-10-27T01:00:00Z",
            "2024-10-27T01:20:00Z", "2024-10-27T01:40:00Z", "2024-10-28T01:00:00Z",
        ]),
        ("*/20 1 * * *", LONDON, "2024-10-27T01:10:00Z", &[
            "2024-10-27T01:20:00Z", "2024-10-27T01:40:00Z",
        ]),
    ];

    #[test]
    fn reference_table() {
        let mut failures = Vec::new();
        for &(expr, tz, after, expected) in REFERENCE {
            let got: Vec<String> = sched(expr, tz)
                .upcoming(at(after), expected.len())
                .map(fmt)
                .collect();
            if got != expected {
                failures.push(format!(
                    "{expr:?} in {tz} after {after}:\n  expected {expected:?}\n  got      {got:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[rustfmt::skip]
    const ERRORS: &[(&str, &str)] = &[
        ("61 * * * *", r#"invalid cron expression "61 * * * *": minute field "61": value 61 out of range 0-59"#),
        ("0 24 * * *", r#"invalid cron expression "0 24 * * *": hour field "24": value 24 out of range 0-23"#),
        ("0 0 0 * *", r#"invalid cron expression "0 0 0 * *": day-of-month field "0": value 0 out of range 1-31"#),
        ("0 0 1 13 *", r#"invalid cron expression "0 0 1 13 *": month field "13": value 13 out of range 1-12"#),
        ("0 0 * * 8", r#"invalid cron expression "0 0 * * 8": day-of-week field "8": value 8 out of range 0-7"#),
        ("60 0 0 * * *", r#"invalid cron expression "60 0 0 * * *": second field "60": value 60 out of range 0-59"#),
        ("1-99999999999 * * * *", r#"invalid cron expression "1-99999999999 * * * *": minute field "1-99999999999": value 99999999999 out of range 0-59"#),
        ("0 0 * foo *", r#"invalid cron expression "0 0 * foo *": month field "foo": unknown name "foo" (use jan..dec or 1-12)"#),
        ("0 0 * * funday", r#"invalid cron expression "0 0 * * funday": day-of-week field "funday": unknown name "funday" (use sun..sat or 0-7)"#),
        ("0 0 * * monday", r#"invalid cron expression "0 0 * * monday": day-of-week field "monday": unknown name "monday" (use sun..sat or 0-7)"#),
        ("0 noon * * *", r#"invalid cron expression "0 noon * * *": hour field "noon": "noon" is not a number"#),
        ("*/0 * * * *", r#"invalid cron expression "*/0 * * * *": minute field "*/0": step "0" is not a whole number of at least 1"#),
        ("*/x * * * *", r#"invalid cron expression "*/x * * * *": minute field "*/x": step "x" is not a whole number of at least 1"#),
        ("*/ * * * *", r#"invalid cron expression "*/ * * * *": minute field "*/": step "" is not a whole number of at least 1"#),
        ("*/60 * * * *", r#"invalid cron expression "*/60 * * * *": minute field "*/60": step 60 exceeds the field's span 0-59, so it would select only one value; for longer periods use an interval such as "@every 90m""#),
        ("5/15 * * * *", r#"invalid cron expression "5/15 * * * *": minute field "5/15": a step needs a range or `*` before it; write "5-59/15""#),
        ("0 17-9 * * *", r#"invalid cron expression "0 17-9 * * *": hour field "17-9": range 17-9 runs backwards; cron ranges do not wrap around"#),
        ("1,,2 * * * *", r#"invalid cron expression "1,,2 * * * *": minute field "1,,2": empty list element"#),
        ("1- * * * *", r#"invalid cron expression "1- * * * *": minute field "1-": cannot read "1-"; expected a number, a name, `*`, a range `a-b`, or a step `*/n` or `a-b/n`"#),
        ("*x * * * *", r#"invalid cron expression "*x * * * *": minute field "*x": cannot read "*x"; expected a number, a name, `*`, a range `a-b`, or a step `*/n` or `a-b/n`"#),
        ("* * * *", r#"invalid cron expression "* * * *": got 4 fields, expected 5 (minute hour day-of-month month day-of-week) or 6 (second minute hour day-of-month month day-of-week)"#),
        ("* * * * * * *", r#"invalid cron expression "* * * * * * *": got 7 fields, expected 5 (minute hour day-of-month month day-of-week) or 6 (second minute hour day-of-month month day-of-week)"#),
        ("daily", r#"invalid cron expression "daily": got 1 field, expected 5 (minute hour day-of-month month day-of-week) or 6 (second minute hour day-of-month month day-of-week)"#),
        ("", r#"invalid cron expression "": the expression is empty; expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second field, or a macro such as @daily"#),
        ("  \t ", r#"invalid cron expression "  \t ": the expression is empty; expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second field, or a macro such as @daily"#),
        ("@fortnightly", r#"invalid cron expression "@fortnightly": unknown macro "@fortnightly"; expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>"#),
        ("@reboot", r#"invalid cron expression "@reboot": @reboot means "when the daemon starts", which has no fire times"#),
        ("@daily 5", r#"invalid cron expression "@daily 5": @daily takes no further fields"#),
        ("0 0 31 2 *", r#"invalid cron expression "0 0 31 2 *": day-of-month field "31": none of these days occurs in the selected months, so the schedule would never fire"#),
        ("0 0 31 4,6,9,11 *", r#"invalid cron expression "0 0 31 4,6,9,11 *": day-of-month field "31": none of these days occurs in the selected months, so the schedule would never fire"#),
        ("@every 0s", r#"invalid interval "0s": interval must be at least one second"#),
        ("@every 15 parsecs", r#"invalid interval "15 parsecs": unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"#),
    ];

    #[test]
    fn error_messages() {
        let mut failures = Vec::new();
        for &(expr, expected) in ERRORS {
            match Schedule::parse(expr, UTC) {
                Ok(s) => failures.push(format!("{expr:?} parsed as {s:?}")),
                Err(e) if e.to_string() != expected => {
                    failures.push(format!("{expr:?}:\n  expected {expected}\n  got      {e}"));
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn errors_are_typed() {
        let err = Schedule::parse("0 0 * * 9", UTC).err();
        assert_eq!(
            err,
            Some(ScheduleError::Field {
                expr: "0 0 * * 9".into(),
                field: CronField::DayOfWeek,
                text: "9".into(),
                problem: FieldProblem::OutOfRange {
                    value: "9".into(),
                    min: 0,
                    max: 7,
                },
            })
        );
        let err = Schedule::every("", DateTime::UNIX_EPOCH).err();
        assert!(matches!(
            err,
            Some(ScheduleError::Interval {
                problem: IntervalProblem::Parse(_),
                ..
            })
        ));
    }

    #[test]
    fn intervals_count_from_the_anchor() {
        let anchor = at("2024-01-01T00:00:00Z");
        let s = Schedule::every("15m", anchor).unwrap_or_else(|e| panic!("{e}"));
        let next = |t: &str| s.next_after(at(t)).map(fmt);
        assert_eq!(
            next("2023-12-31T23:00:00Z").as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            next("2024-01-01T00:00:00Z").as_deref(),
            Some("2024-01-01T00:15:00Z")
        );
        assert_eq!(
            next("2024-01-01T00:07:00Z").as_deref(),
            Some("2024-01-01T00:15:00Z")
        );
        assert_eq!(
            next("2024-01-01T00:14:59.999999999Z").as_deref(),
            Some("2024-01-01T00:15:00Z")
        );
        assert_eq!(
            next("2024-01-01T00:15:00Z").as_deref(),
            Some("2024-01-01T00:30:00Z")
        );
        assert_eq!(s.to_string(), "@every 15m");

        let odd =
            Schedule::every("1h 30m", at("2024-01-01T00:10:00Z")).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<String> = odd
            .upcoming(at("2024-01-02T00:00:00Z"), 2)
            .map(fmt)
            .collect();
        assert_eq!(got, ["2024-01-02T00:10:00Z", "2024-01-02T01:40:00Z"]);
    }

    #[test]
    fn every_macro_is_anchored_at_the_epoch_and_ignores_the_zone() {
        let s = sched("@every 15m", NY);
        let got: Vec<String> = s.upcoming(at("2024-03-10T06:50:00Z"), 3).map(fmt).collect();
        assert_eq!(
            got,
            [
                "2024-03-10T07:00:00Z",
                "2024-03-10T07:15:00Z",
                "2024-03-10T07:30:00Z"
            ]
        );
        assert!(matches!(
            Schedule::parse("@every 500ms", UTC),
            Err(ScheduleError::Interval {
                problem: IntervalProblem::TooShort,
                ..
            })
        ));
    }

    #[test]
    fn from_str_uses_utc_and_display_shows_the_source() {
        let s: Schedule = "  */5 * * * *  ".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.to_string(), "*/5 * * * *");
        assert_eq!(
            s.next_after(at("2024-01-01T00:01:00Z")).map(fmt).as_deref(),
            Some("2024-01-01T00:05:00Z")
        );
    }

    #[test]
    fn extremes_return_none_instead_of_panicking() {
        for expr in ["* * * * *", "0 0 29 2 *", "@every 1h"] {
            for tz in [UTC, NY, Australia::Lord_Howe] {
                let s = sched(expr, tz);
                assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None, "{expr} {tz}");
                let _ = s.next_after(DateTime::<Utc>::MIN_UTC);
            }
        }
    }

    /// Fire times derived independently of `next_after`: walk real time a
    /// minute at a time and apply cron(8)'s rules directly. A minute whose
    /// wall clock is not past the highest wall clock seen so far is a repeat
    /// (fall back); a wall clock that jumps by more than a minute skipped
    /// the times in between (spring forward).
    fn brute_force(s: &CronSpec, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let minute = TimeDelta::minutes(1);
        let mut out = Vec::new();
        let mut high = start.with_timezone(&s.tz).naive_local();
        let mut t = start + minute;
        while t <= end {
            let local = t.with_timezone(&s.tz).naive_local();
            let fire = if local > high {
                let mut skipped = high + minute;
                let mut caught_up = false;
                while skipped < local {
                    caught_up |= s.fixed_time && s.matches(skipped);
                    skipped += minute;
                }
                high = local;
                caught_up || s.matches(local)
            } else {
                !s.fixed_time && s.matches(local)
            };
            if fire {
                out.push(t);
            }
            t += minute;
        }
        out
    }

    #[test]
    fn dst_transitions_match_a_minute_by_minute_walk() {
        let zones = [NY, LONDON, Australia::Lord_Howe, America::Santiago];
        let exprs = [
            "0 2 * * *",
            "30 1 * * *",
            "*/20 * * * *",
            "30 * * * *",
            "15,45 0-3 * * *",
            "0 0 * * *",
            "5-55/10 1,2 * * *",
            "0,30 * * * *",
            "* 2 * * *",
            "@hourly",
        ];
        let hour = TimeDelta::hours(1);
        let mut checked = 0;
        for tz in zones {
            // Find every offset change in 2024 and 2025 by hourly probing.
            let mut t = at("2024-01-01T00:00:00Z");
            let offset_at = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
            let mut offset = offset_at(t);
            let mut transitions = Vec::new();
            while t < at("2026-01-01T00:00:00Z") {
                t += hour;
                let now = offset_at(t);
                if now != offset {
                    transitions.push(t);
                    offset = now;
                }
            }
            assert_eq!(transitions.len(), 4, "{tz} transitions: {transitions:?}");
            for transition in transitions {
                let start = transition - TimeDelta::hours(30);
                let end = transition + TimeDelta::hours(30);
                for expr in exprs {
                    let s = sched(expr, tz);
                    let expected = brute_force(spec(&s), start, end);
                    let got: Vec<_> = s
                        .upcoming(start, 10_000)
                        .take_while(|t| *t <= end)
                        .collect();
                    assert_eq!(
                        got.iter().map(|t| fmt(*t)).collect::<Vec<_>>(),
                        expected.iter().map(|t| fmt(*t)).collect::<Vec<_>>(),
                        "{expr:?} in {tz} around {transition}"
                    );
                    // Asking from any instant gives the next expected time.
                    let mut probe = start;
                    while probe < end - TimeDelta::hours(2) {
                        let got = s.next_after(probe);
                        match expected.iter().find(|t| **t > probe) {
                            Some(want) => {
                                assert_eq!(got, Some(*want), "{expr:?} in {tz} after {probe}")
                            }
                            None => assert!(
                                got.is_some_and(|g| g > end),
                                "{expr:?} in {tz} after {probe}"
                            ),
                        }
                        probe += TimeDelta::minutes(7) + TimeDelta::seconds(13);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
    }

    #[test]
    fn wildcard_seconds_stay_evenly_spaced_through_dst() {
        // A wildcard job fires by the clock on both passes of a repeated
        // hour and skips missing times, so in real time it never stutters.
        for (expr, gap) in [("*/30 * * * * *", 30), ("*/15 * * * *", 900)] {
            for start in ["2024-03-10T05:00:00Z", "2024-11-03T04:00:00Z"] {
                let times: Vec<_> = sched(expr, NY).upcoming(at(start), 1000).collect();
                assert_eq!(times.len(), 1000);
                for pair in times.windows(2) {
                    assert_eq!(
                        (pair[1] - pair[0]).num_seconds(),
                        gap,
                        "{expr} at {}",
                        pair[0]
                    );
                }
            }
        }
    }

    /// Tiny deterministic generator so the comparison below needs no
    /// extra dependency and always checks the same cases.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u32) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % u64::from(n)) as u32
        }

        fn between(&mut self, lo: u32, hi: u32) -> u32 {
            lo + self.below(hi - lo + 1)
        }
    }

    fn random_element(rng: &mut Rng, min: u32, max: u32) -> String {
        let (a, b) = {
            let x = rng.between(min, max);
            let y = rng.between(min, max);
            (x.min(y), x.max(y))
        };
        let step = rng.between(1, (max - min).max(1));
        match rng.below(5) {
            0 => "*".into(),
            1 => a.to_string(),
            2 => format!("{a}-{b}"),
            3 => format!("*/{step}"),
            _ => format!("{a}-{b}/{step}"),
        }
    }

    fn random_field(rng: &mut Rng, min: u32, max: u32) -> String {
        let count = if rng.below(3) == 0 {
            rng.between(2, 3)
        } else {
            1
        };
        (0..count)
            .map(|_| random_element(rng, min, max))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `cron` crate agrees with crontab wherever the dialects overlap:
    /// UTC, numeric fields, and day-of-week either `*` or Monday-Saturday
    /// names with a `*`-led day-of-month (so both implementations AND).
    #[test]
    fn agrees_with_the_cron_crate_where_dialects_overlap() {
        let mut rng = Rng(0x5eed_cafe_f00d_1234);
        let mut compared = 0;
        for _ in 0..400 {
            let (dom, dow) = if rng.below(2) == 0 {
                (random_field(&mut rng, 1, 31), "*".to_string())
            } else {
                let dom = if rng.below(2) == 0 {
                    "*".to_string()
                } else {
                    format!("*/{}", rng.between(1, 30))
                };
                let a = rng.between(1, 6) as usize;
                let b = rng.between(1, 6) as usize;
                let dow = match rng.below(3) {
                    0 => DAY_NAMES[a].to_string(),
                    1 => format!("{}-{}", DAY_NAMES[a.min(b)], DAY_NAMES[a.max(b)]),
                    _ => format!("{},{}", DAY_NAMES[a], DAY_NAMES[b].to_uppercase()),
                };
                (dom, dow)
            };
            let expr = format!(
                "{} {} {} {} {} {}",
                random_field(&mut rng, 0, 59),
                random_field(&mut rng, 0, 59),
                random_field(&mut rng, 0, 23),
                dom,
                random_field(&mut rng, 1, 12),
                dow
            );
            let ours = match Schedule::parse(&expr, UTC) {
                Ok(s) => s,
                Err(ScheduleError::Field {
                    problem: FieldProblem::NeverFires,
                    ..
                }) => continue,
                Err(e) => panic!("{e}"),
            };
            let theirs = cron::Schedule::from_str(&expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            let start = Utc
                .with_ymd_and_hms(
                    rng.between(2000, 2040) as i32,
                    rng.between(1, 12),
                    rng.between(1, 28),
                    rng.between(0, 23),
                    rng.between(0, 59),
                    rng.between(0, 59),
                )
                .single()
                .unwrap_or_else(|| panic!("bad start"));
            let want: Vec<String> = theirs.after(&start).take(6).map(fmt).collect();
            let got: Vec<String> = ours.upcoming(start, 6).map(fmt).collect();
            assert_eq!(got, want, "{expr:?} after {start}");
            compared += 1;
        }
        assert!(compared > 300, "only {compared} expressions compared");
    }

    #[test]
    fn sparse_and_dense_schedules_are_cheap() {
        // 2,000 leap days is 8,000 years of calendar; 20,000 seconds of a
        // per-second schedule crosses a fall-back overlap. Both stay fast
        // because the search jumps rather than steps.
        let leap = sched("0 0 29 2 *", UTC);
        let last = leap.upcoming(at("2000-01-01T00:00:00Z"), 2_000).last();
        let leap_years = (2000..).filter(|y| NaiveDate::from_ymd_opt(*y, 2, 29).is_some());
        assert_eq!(last.map(|t| t.year()), leap_years.take(2_000).last());
        let dense = sched("* * * * * *", NY);
        assert_eq!(
            dense.upcoming(at("2024-11-03T04:00:00Z"), 20_000).count(),
            20_000
        );
    }
}
