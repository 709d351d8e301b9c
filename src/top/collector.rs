//! The collector thread: one scan per interval, each sent as a [`Sample`] (or the reason
//! it failed) over a channel. It ends when the receiver is dropped.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::model::Sample;
use crate::probe::ProbeManager;

/// What the collector sends.
#[derive(Debug)]
pub enum Update {
    Sample(Box<Sample>),
    /// The scan failed (libvirt unreachable, …); the collector tries again next interval.
    Failed(String),
}

/// Start the collector: a scan now, then one every `interval` (a scan that takes longer
/// is followed by the next at once).
pub fn spawn(probes: Arc<ProbeManager>, interval: Duration) -> Receiver<Update> {
    let (tx, rx) = crossbeam_channel::unbounded();
    thread::Builder::new()
        .name("top-collector".into())
        .spawn(move || run(&probes, interval, &tx))
        .ok();
    rx
}

fn run(probes: &ProbeManager, interval: Duration, tx: &Sender<Update>) {
    loop {
        let at = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let update = match probes.scan() {
            Ok(snapshot) => Update::Sample(Box::new(Sample { at, unix, snapshot })),
            Err(e) => Update::Failed(e.to_string()),
        };
        if tx.send(update).is_err() {
            return;
        }
        let next = at + interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
    }
}
