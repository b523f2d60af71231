//! Progress bars on a terminal, nothing anywhere else (cron mail, pipes, `--json`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Whether progress bars may be drawn: stderr is a terminal and the user did not ask
/// for quiet or machine-readable output.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    bars: bool,
}

impl Ui {
    /// Decides once per run.
    pub fn new(quiet: bool, json: bool) -> Self {
        Ui {
            bars: !quiet && !json && std::io::stderr().is_terminal(),
        }
    }

    /// A byte-counting bar (hidden when bars are off).
    pub fn bytes(&self, total: u64, what: &str) -> ProgressBar {
        self.bar(
            total,
            what,
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }

    /// A page-counting bar for the copy.
    pub fn pages(&self, total: u64, what: &str) -> ProgressBar {
        self.bar(
            total,
            what,
            "{msg:>12} [{bar:30}] {pos}/{len} pages eta {eta}",
        )
    }

    fn bar(&self, total: u64, what: &str, template: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        bar
    }
}
