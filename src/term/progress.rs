//! Progress on a terminal: a spinner while guest agents are asked, a byte meter while a
//! file moves. Both draw only into a [`ProgressSink`] they are given — stderr when it is a
//! terminal, so piped output and logs stay clean — and always erase their line before
//! anything else prints.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::render::text::sanitize;
use crate::units;

/// Progress of a running scan: probes finished / started.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicUsize,
    pub total: AtomicUsize,
}

/// Where progress lines are drawn; nowhere when it holds no writer.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<Mutex<Box<dyn Write + Send>>>>);

impl ProgressSink {
    /// The process's stderr when it is a terminal, else nowhere.
    pub fn stderr_if_terminal() -> ProgressSink {
        if std::io::stderr().is_terminal() {
            ProgressSink::to(std::io::stderr())
        } else {
            ProgressSink::none()
        }
    }

    pub fn none() -> ProgressSink {
        ProgressSink(None)
    }

    /// Draw into `w` (tests pass a buffer).
    pub fn to(w: impl Write + Send + 'static) -> ProgressSink {
        ProgressSink(Some(Arc::new(Mutex::new(Box::new(w)))))
    }

    pub fn is_drawing(&self) -> bool {
        self.0.is_some()
    }

    /// Replace the progress line with `text` (escaped: it may hold guest strings).
    fn draw(&self, text: &str) {
        if let Some(w) = &self.0 {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = write!(w, "\r\x1b[2K{}", sanitize(text));
            let _ = w.flush();
        }
    }

    fn clear(&self) {
        if let Some(w) = &self.0 {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = write!(w, "\r\x1b[2K");
            let _ = w.flush();
        }
    }
}

/// A spinner with the count of guest agents that answered, on its own thread.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Start a spinner labelled `label` showing `progress`; a no-op without a sink.
    pub fn start(label: &str, progress: Arc<Progress>, sink: ProgressSink) -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        if !sink.is_drawing() {
            return Spinner { stop, handle: None };
        }
        let label = label.to_string();
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut i = 0;
            // Wait a moment first: fast scans finish without any flicker.
            thread::sleep(Duration::from_millis(150));
            let mut drawn = false;
            while !flag.load(Ordering::Relaxed) {
                let total = progress.total.load(Ordering::Relaxed);
                let done = progress.done.load(Ordering::Relaxed);
                let counts = if total > 0 {
                    format!(" {done}/{total} guest agents answered")
                } else {
                    String::new()
                };
                sink.draw(&format!("{} {label}{counts}", FRAMES[i % FRAMES.len()]));
                drawn = true;
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
            if drawn {
                sink.clear();
            }
        });
        Spinner {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A byte meter for a transfer: drawn only for transfers that are large (`min_total`)
/// or take a while, at most five times a second.
pub struct Meter {
    label: String,
    total: Option<u64>,
    done: u64,
    sink: ProgressSink,
    last: Option<Instant>,
    started: Instant,
    shown: bool,
}

impl Meter {
    /// A meter for `total` bytes (when known); silent when `total` is below `min_total`.
    pub fn new(label: &str, total: Option<u64>, min_total: u64, sink: &ProgressSink) -> Meter {
        let sink = if total.is_some_and(|t| t <= min_total) {
            ProgressSink::none()
        } else {
            sink.clone()
        };
        Meter {
            label: label.to_string(),
            total,
            done: 0,
            sink,
            last: None,
            started: Instant::now(),
            shown: false,
        }
    }

    /// A meter that never draws.
    pub fn silent() -> Meter {
        Meter::new("", None, 0, &ProgressSink::none())
    }

    pub fn add(&mut self, n: usize) {
        self.done += n as u64;
        if !self.sink.is_drawing()
            || self.started.elapsed() < Duration::from_millis(300)
            || self
                .last
                .is_some_and(|l| l.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let text = match self.total {
            Some(t) if t > 0 => format!(
                "{} {} / {} ({}%)",
                self.label,
                units::bytes(self.done),
                units::bytes(t),
                self.done.min(t) * 100 / t
            ),
            _ => format!("{} {}", self.label, units::bytes(self.done)),
        };
        self.sink.draw(&text);
        self.shown = true;
    }

    pub fn finish(&mut self) {
        if self.shown {
            self.sink.clear();
            self.shown = false;
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer the test keeps a handle to.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_meter_draws_into_its_sink_and_erases_itself() {
        let buf = Shared::default();
        let sink = ProgressSink::to(buf.clone());
        let mut m = Meter::new("pulling \x1b[31m", Some(10 << 20), 1 << 20, &sink);
        m.started -= Duration::from_secs(1);
        m.add(5 << 20);
        m.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("pulling \\x1b[31m 5.0 MiB / 10.0 MiB (50%)"),
            "{text:?}"
        );
        assert!(text.ends_with("\r\x1b[2K"), "{text:?}");
    }

    #[test]
    fn small_transfers_and_no_sink_draw_nothing() {
        let buf = Shared::default();
        let mut m = Meter::new("x", Some(100), 1 << 20, &ProgressSink::to(buf.clone()));
        m.started -= Duration::from_secs(1);
        m.add(100);
        drop(m);
        assert!(buf.0.lock().unwrap().is_empty());
        let s = Spinner::start("scanning", Arc::default(), ProgressSink::none());
        assert!(s.handle.is_none());
    }
}
