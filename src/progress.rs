//! Progress of the long steps (replaying captures, hashing inputs), for a
//! caller that wants to show it: the library only reports bytes done; the
//! `procflow` binary draws bars when stderr is a terminal and nothing
//! otherwise.

use std::fmt;
use std::sync::Arc;

/// A long step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Reading the captures into flows.
    Replay,
    /// Hashing the inputs.
    Hash,
}

impl Stage {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Replay => "replay",
            Stage::Hash => "sha256",
        }
    }
}

/// What happened in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The stage starts; this many bytes are to be done.
    Start(u64),
    /// This many more bytes are done.
    Advance(u64),
    /// The stage is over.
    Finish,
}

/// Where progress goes: cheap to clone, callable from any thread.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(Stage, Event) + Send + Sync>);

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

impl Progress {
    /// Progress reported to `f`.
    pub fn new(f: impl Fn(Stage, Event) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }

    /// Reports an event.
    pub fn event(&self, stage: Stage, e: Event) {
        (self.0)(stage, e)
    }
}

/// A reader that reports the bytes read through it.
pub struct CountingReader<R> {
    /// The reader.
    pub inner: R,
    /// Where to report.
    pub progress: Progress,
    /// As which stage.
    pub stage: Stage,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.event(self.stage, Event::Advance(n as u64));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    #[test]
    fn counting_reader_reports_every_byte() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let p = Progress::new(move |stage, e| s2.lock().unwrap().push((stage, e)));
        let mut r = CountingReader {
            inner: &[7u8; 10_000][..],
            progress: p,
            stage: Stage::Hash,
        };
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        let total: u64 = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(s, e)| match (s, e) {
                (Stage::Hash, Event::Advance(n)) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 10_000);
    }
}
