//! The collectors: one thread per host, each running one scan per interval and sending it
//! as a [`Sample`] (or the reason it failed) over one shared channel, tagged with the
//! host's index. A slow or dead host delays only its own samples. They end when the
//! receiver is dropped.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::model::Sample;
use crate::probe::ProbeManager;

/// What a collector sends.
#[derive(Debug)]
pub enum Update {
    Sample(Box<Sample>),
    /// The scan failed (libvirt unreachable, …); the collector tries again next interval.
    Failed(String),
}

/// One host to collect from: its probe manager, and how to learn its CPU count (asked
/// once, on the collector's own thread: a slow host must not hold up the others).
pub struct Source {
    pub probes: Arc<ProbeManager>,
    pub host_cpus: Box<dyn FnOnce() -> Option<u32> + Send>,
}

/// Start a collector per source: a scan now, then one every `interval` (a scan that takes
/// longer is followed by the next at once). Updates come tagged with the source's index.
pub fn spawn(sources: Vec<Source>, interval: Duration) -> Receiver<(usize, Update)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, source) in sources.into_iter().enumerate() {
        let tx = tx.clone();
        thread::Builder::new()
            .name(format!("top-collector-{i}"))
            .spawn(move || {
                let host_cpus = (source.host_cpus)();
                run(&source.probes, host_cpus, interval, i, &tx)
            })
            .ok();
    }
    rx
}

fn run(
    probes: &ProbeManager,
    host_cpus: Option<u32>,
    interval: Duration,
    host: usize,
    tx: &Sender<(usize, Update)>,
) {
    loop {
        let at = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let update = match probes.scan() {
            Ok(snapshot) => Update::Sample(Box::new(Sample {
                at,
                unix,
                snapshot,
                host_cpus,
            })),
            Err(e) => Update::Failed(e.to_string()),
        };
        if tx.send((host, update)).is_err() {
            return;
        }
        let next = at + interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
    }
}
