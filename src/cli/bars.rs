//! Progress bars on stderr for replay and hashing, only when stderr is a
//! terminal (nothing at all otherwise, so logs and scripts stay clean).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use procflow::progress::{Event, Progress, Stage};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// Bars for the stages, or `None` when stderr is not a terminal.
pub fn terminal_progress() -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    let bars: Arc<Mutex<HashMap<Stage, ProgressBar>>> = Arc::default();
    let style = ProgressStyle::with_template(
        "{prefix:>7} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    Some(Progress::new(move |stage, e| {
        let Ok(mut bars) = bars.lock() else {
            return;
        };
        match e {
            Event::Start(total) => {
                let b = multi.add(ProgressBar::new(total));
                b.set_style(style.clone());
                b.set_prefix(stage.label());
                bars.insert(stage, b);
            }
            Event::Advance(n) => {
                if let Some(b) = bars.get(&stage) {
                    b.inc(n);
                }
            }
            Event::Finish => {
                if let Some(b) = bars.remove(&stage) {
                    b.finish_and_clear();
                }
            }
        }
    }))
}
