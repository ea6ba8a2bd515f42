//! Progress of long work (verify, gc, restore): an `indicatif` bar on
//! stderr when stderr is a terminal, plain lines otherwise (at most one a
//! second per phase, plus each phase's last), e.g. `verify: chunks
//! 1200/5000`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;

use super::show::bytes;

/// What the counts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Items (chunks, manifests).
    Count,
    /// Bytes.
    Bytes,
}

/// Plain-line state: the phase shown last and when.
struct Plain {
    phase: String,
    last: Option<Instant>,
    finished_phase: bool,
}

/// Progress of one command.
pub struct Progress {
    label: &'static str,
    unit: Unit,
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
}

/// How often plain lines may be printed.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    /// Progress labelled `label` (the command's name).
    pub fn new(label: &'static str, unit: Unit) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = match unit {
                Unit::Count => "{prefix}: {msg:>9} [{bar:30}] {pos}/{len} ({elapsed})",
                Unit::Bytes => "{prefix}: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::new(0).with_style(style);
            bar.set_prefix(label);
            bar
        });
        Progress {
            label,
            unit,
            bar,
            plain: Mutex::new(Plain {
                phase: String::new(),
                last: None,
                finished_phase: false,
            }),
        }
    }

    /// `done` of `total` in `phase` (may be empty).
    pub fn update(&self, phase: &str, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(phase.to_string());
            return;
        }
        let mut st = self.plain.lock();
        let new_phase = st.phase != phase || st.last.is_none();
        if new_phase {
            st.phase = phase.to_string();
            st.finished_phase = false;
        }
        let last = done >= total && !st.finished_phase;
        let due = st.last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if !(new_phase || last || due) {
            return;
        }
        if last {
            st.finished_phase = true;
        }
        st.last = Some(Instant::now());
        let (d, t) = match self.unit {
            Unit::Count => (done.to_string(), total.to_string()),
            Unit::Bytes => (bytes(done), bytes(total)),
        };
        let sep = if phase.is_empty() { "" } else { " " };
        eprintln!("{}: {phase}{sep}{d}/{t}", self.label);
    }

    /// Work whose progress cannot be measured: a spinner on a terminal,
    /// one line otherwise.
    pub fn spin(&self, what: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix}: {spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(what.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            None => eprintln!("{}: {what}", self.label),
        }
    }

    /// Removes the bar (plain lines stay).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
