//! Reporting progress: indicatif bars on a terminal, plain lines otherwise.
//!
//! indicatif stays in this module: pipeline code reports through `fetch::artifacts::Observer`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fetch::artifacts::{Observer, Outcome};

/// Progress for `kiln fetch`: one bar per artifact under way and a total, on a terminal;
/// one line per finished artifact otherwise (CI logs, pipes).
pub struct FetchProgress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    tasks: usize,
    finished: AtomicUsize,
    active: Mutex<HashMap<String, (ProgressBar, u64)>>,
}

impl FetchProgress {
    /// Progress for `tasks` artifacts of `total_bytes` known bytes (images add theirs as
    /// they go).
    pub fn new(tasks: usize, total_bytes: u64) -> FetchProgress {
        if !std::io::stderr().is_terminal() {
            return FetchProgress { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        total.set_message(format!("0/{tasks} artifacts"));
        FetchProgress {
            bars: Some(Bars {
                multi,
                total,
                tasks,
                finished: AtomicUsize::new(0),
                active: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Observer for FetchProgress {
    fn started(&self, label: &str, size: Option<u64>) {
        let Some(bars) = &self.bars else { return };
        let bar = bars
            .multi
            .insert_before(&bars.total, ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix("fetching");
        bar.set_message(label.to_string());
        bars.active
            .lock()
            .expect("bars lock")
            .insert(label.to_string(), (bar, 0));
    }

    fn progress(&self, label: &str, bytes: u64) {
        let Some(bars) = &self.bars else { return };
        let mut active = bars.active.lock().expect("bars lock");
        if let Some((bar, seen)) = active.get_mut(label) {
            if bytes > bar.length().unwrap_or(0) {
                bars.total.inc_length(bytes - bar.length().unwrap_or(0));
                bar.set_length(bytes);
            }
            if bytes > *seen {
                bars.total.inc(bytes - *seen);
                *seen = bytes;
            }
            bar.set_position(bytes);
        }
    }

    fn finished(&self, outcome: &Outcome) {
        match &self.bars {
            None => match &outcome.error {
                None => eprintln!("fetched {} ({} bytes)", outcome.label, outcome.bytes),
                Some(error) => eprintln!("failed {}: {error}", outcome.label),
            },
            Some(bars) => {
                if let Some((bar, _)) = bars
                    .active
                    .lock()
                    .expect("bars lock")
                    .remove(&outcome.label)
                {
                    bar.finish_and_clear();
                }
                let finished = bars.finished.fetch_add(1, Ordering::SeqCst) + 1;
                bars.total
                    .set_message(format!("{finished}/{} artifacts", bars.tasks));
                match &outcome.error {
                    None => bars
                        .multi
                        .suspend(|| eprintln!("fetched {}", outcome.label)),
                    Some(error) => bars
                        .multi
                        .suspend(|| eprintln!("failed {}: {error}", outcome.label)),
                }
            }
        }
    }
}

impl Drop for FetchProgress {
    fn drop(&mut self) {
        if let Some(bars) = &self.bars {
            bars.total.finish_and_clear();
        }
    }
}

/// One bar of bytes for one long copy (`kiln flash` writing, then reading back) on a
/// terminal; nothing otherwise, since the command ends with a summary line.
pub struct BytesProgress {
    bar: Option<ProgressBar>,
}

impl BytesProgress {
    /// A bar labelled `label` for `total` bytes.
    pub fn new(label: &str, total: u64) -> BytesProgress {
        if !std::io::stderr().is_terminal() {
            return BytesProgress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        BytesProgress { bar: Some(bar) }
    }

    /// `bytes` are done.
    pub fn set(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }
}

impl Drop for BytesProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
