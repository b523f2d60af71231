//! healthchecks.io-style pings: `URL/start` when a job starts, `URL` when it succeeds and
//! `URL/fail` (with the error as the body) when it fails, so that a dead-man's switch
//! notices both failed and missing backups.
//!
//! Every ping is a POST with a short plain-text body (healthchecks.io shows it in the
//! check's log), a 10 s timeout and up to two retries for network errors and 5xx/429
//! answers. A ping that still fails is a warning: monitoring trouble never fails a backup.
//! Proxies are taken from the usual `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` variables.

use std::time::Duration;
use ureq::http::Uri;

/// Per-attempt timeout, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per ping (the first plus retries).
const ATTEMPTS: u32 = 3;
/// Pause before a retry.
const BACKOFF: Duration = Duration::from_secs(1);
/// The most of an error message sent as a `/fail` body.
pub const MAX_BODY: usize = 4096;

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The job is starting (`URL/start`).
    Start,
    /// The job succeeded (`URL`).
    Success,
    /// The job failed (`URL/fail`).
    Failure,
}

impl Event {
    fn suffix(self) -> &'static str {
        match self {
            Event::Start => "/start",
            Event::Success => "",
            Event::Failure => "/fail",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Failure => "failure",
        }
    }
}

/// A ping URL that does not make sense; reported as a configuration error.
#[derive(Debug, thiserror::Error)]
#[error(
    "ping_url {url:?} {why}; it must be an http:// or https:// URL such as https://hc-ping.com/<uuid>"
)]
pub struct BadPingUrl {
    url: String,
    why: String,
}

/// Checks a ping URL up front, so a typo is a configuration error rather than a warning
/// on every run: it must be an absolute http:// or https:// URL.
pub fn check_url(url: &str) -> Result<(), BadPingUrl> {
    let bad = |why: &str| BadPingUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("has no http:// or https:// scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// The URL for an event: the suffix goes at the end of the path, before any query
/// string, and a trailing slash on the base is not doubled.
pub fn event_url(base: &str, event: Event) -> String {
    let (path, query) = match base.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base, None),
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    match query {
        Some(q) => format!("{path}{}?{q}", event.suffix()),
        None => format!("{path}{}", event.suffix()),
    }
}

/// The URL with its path and query hidden (`https://hc-ping.com/…`): the path of a ping
/// URL is a credential of sorts, and messages end up in mail and journals.
pub fn redact(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => format!(
            "{}://{}/…",
            uri.scheme_str().unwrap_or("?"),
            uri.authority()
                .map(|a| a
                    .as_str()
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .to_string())
                .unwrap_or_default()
        ),
        Err(_) => "(invalid URL)".to_string(),
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sends pings for one job.
pub struct Pinger {
    base: String,
    agent: ureq::Agent,
    /// Whose job, for warnings.
    name: String,
}

impl Pinger {
    /// A pinger for `base` (already checked with [`check_url`]); `name` labels warnings.
    pub fn new(base: &str, name: &str) -> Pinger {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .user_agent(concat!("sqlbak/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Pinger {
            base: base.to_string(),
            agent,
            name: name.to_string(),
        }
    }

    /// Sends one ping; failures are logged as warnings and otherwise ignored.
    pub fn ping(&self, event: Event, body: &str) {
        let url = event_url(&self.base, event);
        let body = truncate(body, MAX_BODY);
        match self.send(&url, body) {
            Ok(()) => tracing::debug!("{}: pinged {} ({})", self.name, redact(&url), event.label()),
            Err(e) => tracing::warn!(
                "{}: the {} ping to {} failed: {e}; the snapshot's result is not affected",
                self.name,
                event.label(),
                redact(&url)
            ),
        }
    }

    fn send(&self, url: &str, body: &str) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                std::thread::sleep(BACKOFF);
            }
            let result = self
                .agent
                .post(url)
                .content_type("text/plain; charset=utf-8")
                .send(body);
            match result {
                Ok(_) => return Ok(()),
                Err(ureq::Error::StatusCode(code)) => {
                    last = format!("the server answered HTTP {code}");
                    if !(code == 429 || code >= 500) {
                        break;
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_urls() {
        let hc = "https://hc-ping.com/0b5a9a1c-1234";
        assert_eq!(event_url(hc, Event::Start), format!("{hc}/start"));
        assert_eq!(event_url(hc, Event::Success), hc);
        assert_eq!(event_url(hc, Event::Failure), format!("{hc}/fail"));
        assert_eq!(
            event_url("https://hc.example/ping/key/app/", Event::Failure),
            "https://hc.example/ping/key/app/fail"
        );
        assert_eq!(
            event_url("http://h/p?create=1", Event::Start),
            "http://h/p/start?create=1"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hc-ping.com/uuid").is_ok());
        assert!(check_url("http://127.0.0.1:8000/ping/x").is_ok());
        for bad in ["hc-ping.com/uuid", "ftp://h/x", "https://", "not a url", ""] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_keeps_only_scheme_and_host() {
        assert_eq!(
            redact("https://user:pw@hc.example:8443/ping/secret?x=1"),
            "https://hc.example:8443/…"
        );
        assert_eq!(redact("https://hc-ping.com/uuid"), "https://hc-ping.com/…");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 4), "abcd");
        assert_eq!(truncate("aé", 2), "a");
    }
}
