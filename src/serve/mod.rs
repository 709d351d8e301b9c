//! `serve`: Prometheus metrics and a health check over the latest snapshot.
//!
//! One background thread scans every interval with the same probe manager (and so the
//! same OS cache and deadlines) as `scan`, renders the metrics once and publishes the
//! bytes. The HTTP side ([`http`]: hyper on a single-threaded tokio runtime, TLS and
//! basic auth from [`web_config`]) only copies a pointer to those bytes: a scrape never
//! calls libvirt or a guest agent, so a frozen guest or a dead libvirtd cannot slow it
//! down. When the connection breaks (libvirtd restarted), the next interval opens a new
//! one.

pub mod health;
pub mod http;
pub mod metrics;
pub mod web_config;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::hypervisor::{HvError, HvResult, Hypervisor};
use crate::probe::cache::OsCache;
use crate::probe::{save_cache, ProbeManager, ProbeSettings};
use crate::render::text::{sanitize, terminal_line};
use crate::snapshot::{AgentStatus, Snapshot};

use health::HealthInputs;
use metrics::{Exposition, ScanStats};

/// Opens (or re-opens) the hypervisor connection.
pub type Opener = Arc<dyn Fn() -> HvResult<Arc<dyn Hypervisor>> + Send + Sync>;

/// How often blocked loops look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// What the scan loop publishes and the HTTP side reads.
pub struct Shared {
    exposition: RwLock<Exposition>,
    health: Mutex<HealthInputs>,
    stale_after: Duration,
    /// `/probe?target=NAME`: each host of the config file, scanned by a loop of its own.
    targets: BTreeMap<String, Arc<Shared>>,
}

impl Shared {
    fn new(stale_after: Duration) -> Shared {
        Shared {
            exposition: RwLock::new(metrics::render(None, &ScanStats::default())),
            health: Mutex::new(HealthInputs::default()),
            stale_after,
            targets: BTreeMap::new(),
        }
    }

    /// The state behind `/probe?target=NAME`.
    pub fn target(&self, name: &str) -> Option<&Arc<Shared>> {
        self.targets.get(name)
    }

    /// The names `/probe` knows, sorted.
    pub fn target_names(&self) -> Vec<&str> {
        self.targets.keys().map(String::as_str).collect()
    }

    /// The bytes of the latest rendering (a pointer copy).
    pub fn exposition(&self) -> Exposition {
        self.exposition
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `/healthz` at this instant.
    pub fn health(&self) -> Result<(), String> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health::check(&h, Instant::now(), self.stale_after)
    }

    fn update_health(&self, f: impl FnOnce(&mut HealthInputs)) {
        f(&mut self.health.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn publish(&self, e: Exposition) {
        *self.exposition.write().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// Where to listen: an address with a port, `host:port` resolved once.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    listen
        .to_socket_addrs()
        .map_err(|e| format!("--listen {listen:?}: {e} (expected e.g. 127.0.0.1:9177)"))?
        .next()
        .ok_or_else(|| format!("--listen {listen:?}: the name resolves to no address"))
}

/// A running exporter: its address and the threads to wait for.
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Whether connections speak TLS.
    pub tls: bool,
    /// The connection cap in force.
    pub max_connections: usize,
    stop: Arc<AtomicBool>,
    http: thread::JoinHandle<()>,
    scanners: Vec<thread::JoinHandle<()>>,
}

impl Running {
    /// Wait until the stop flag is set and the HTTP thread has finished. The scan
    /// thread gets a moment to finish its scan; one stuck on libvirt is left behind (the
    /// process is about to exit, and the OS cache was saved after the last scan).
    pub fn wait(self) {
        let _ = self.http.join();
        let give_up = Instant::now() + Duration::from_secs(2);
        while !self.scanners.iter().all(|s| s.is_finished()) && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(20));
        }
        for s in self.scanners {
            if s.is_finished() {
                let _ = s.join();
            } else {
                tracing::warn!("a scan is still waiting on libvirt; exiting without it");
            }
        }
    }

    /// Ask every thread to stop (what SIGTERM does).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How the exporter scans and when it calls its data stale.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time between the starts of two background scans.
    pub interval: Duration,
    /// No finished scan for this long: `/healthz` says stale (or stuck, while one runs).
    pub stale_after: Duration,
    /// The probe manager's settings for every scan.
    pub probes: ProbeSettings,
    /// With several hosts: the cache file their scan loops share.
    pub cache: Option<SharedCache>,
}

/// The OS cache the scan loops of several hosts share: one file keyed by URI, saved whole
/// after each loop's scan with `saving` (the widest TTLs of every host), so that no loop
/// drops another's entries.
#[derive(Debug, Clone)]
pub struct SharedCache {
    pub cache: Arc<Mutex<OsCache>>,
    pub saving: ProbeSettings,
}

/// A host `/probe?target=NAME` serves: its name, how to open it, and its own options (the
/// host's probe timeout and TTLs; the interval is serve's).
pub struct Target {
    pub name: String,
    pub opener: Opener,
    pub options: ServeOptions,
}

impl ServeOptions {
    /// The default staleness threshold: three intervals, or one interval plus two scan
    /// deadlines when the scans are long for the interval.
    pub fn default_stale_after(interval: Duration, scan_deadline: Duration) -> Duration {
        health::stale_after(interval, scan_deadline)
    }
}

/// Start listening (plain HTTP on `listen`) and scanning. Returns once the socket is
/// bound; the error is one line.
pub fn start(
    options: ServeOptions,
    opener: Opener,
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Result<Running, String> {
    start_with(
        options,
        opener,
        Vec::new(),
        http::Endpoint::plain(listen),
        stop,
    )
}

/// [`start`] with TLS, basic auth or other limits (`endpoint`), and the hosts `/probe`
/// serves (`targets`: each scanned in the background like the default host, every
/// interval with its own options, its scrapes served from its own latest rendering).
pub fn start_with(
    options: ServeOptions,
    opener: Opener,
    targets: Vec<Target>,
    endpoint: http::Endpoint,
    stop: Arc<AtomicBool>,
) -> Result<Running, String> {
    let mut shared = Shared::new(options.stale_after);
    let mut loops = vec![("scan".to_string(), opener, options, None)];
    for t in targets {
        let target = Arc::new(Shared::new(t.options.stale_after));
        shared.targets.insert(t.name.clone(), Arc::clone(&target));
        loops.push((
            format!("scan-{}", t.name),
            t.opener,
            t.options,
            Some(target),
        ));
    }
    let shared = Arc::new(shared);
    let server = http::Server::bind(endpoint, Arc::clone(&shared))?;
    let (addr, tls, max_connections) = (server.addr, server.tls(), server.max_connections);

    let mut scanners = Vec::with_capacity(loops.len());
    for (thread_name, opener, options, target) in loops {
        let publish_to = target.unwrap_or_else(|| Arc::clone(&shared));
        let stop = Arc::clone(&stop);
        scanners.push(
            thread::Builder::new()
                .name(thread_name)
                .spawn(move || scan_loop(options, opener, &publish_to, &stop))
                .map_err(|e| format!("cannot start a scan thread: {e}"))?,
        );
    }
    let http = server.spawn(Arc::clone(&stop))?;
    Ok(Running {
        addr,
        shared,
        tls,
        max_connections,
        stop,
        http,
        scanners,
    })
}

/// The background loop: scan, render, publish, wait; reconnect after a failure.
fn scan_loop(options: ServeOptions, opener: Opener, shared: &Shared, stop: &AtomicBool) {
    let interval = options.interval;
    let mut probes: Option<Arc<ProbeManager>> = None;
    let mut stats = ScanStats::default();
    let mut agents = AgentWatch::default();
    // The shared cache could not be saved last time (said once, until it can again).
    let mut cache_failing = false;
    while !stop.load(Ordering::SeqCst) {
        let tick = Instant::now();
        shared.update_health(|h| h.scan_started = Some(tick));
        // A panic in an adapter (a bug, or a library that panics on a dead connection)
        // must cost one scan, not the exporter: it counts as a failed scan and the next
        // interval reconnects.
        let result = catch_unwind(AssertUnwindSafe(|| match &probes {
            Some(p) => p.scan(),
            None => opener().and_then(|hv| {
                let settings = options.probes.clone();
                let p = Arc::new(match &options.cache {
                    Some(c) => ProbeManager::with_cache(hv, settings, Arc::clone(&c.cache)),
                    None => ProbeManager::new(hv, settings),
                });
                probes = Some(Arc::clone(&p));
                p.scan()
            }),
        }))
        .unwrap_or_else(|_| {
            Err(HvError::Failed {
                operation: "scan",
                detail: "the scan panicked (see the message above)".into(),
            })
        });
        let elapsed = tick.elapsed();
        stats.scans += 1;
        stats.last_duration_seconds = Some(elapsed.as_secs_f64());
        let was_up = stats.up;
        let (snapshot, failure) = match result {
            Ok(snap) => {
                if was_up == Some(false) {
                    tracing::info!("libvirt is reachable again");
                }
                stats.up = Some(true);
                stats.last_success_unix = Some(snap.taken_at);
                tracing::info!(
                    duration_ms = elapsed.as_millis() as u64,
                    domains = snap.vms.len(),
                    domain_errors = snap.errors.len(),
                    "scan finished"
                );
                agents.log_changes(&snap);
                if let Some(c) = &options.cache {
                    let mut cache = c.cache.lock().unwrap_or_else(|e| e.into_inner());
                    match save_cache(&mut cache, &c.saving) {
                        Err(e) if !cache_failing => {
                            cache_failing = true;
                            tracing::warn!("cannot save the OS cache: {}", terminal_line(&e));
                        }
                        Err(_) => {}
                        Ok(()) => cache_failing = false,
                    }
                }
                (Some(Arc::new(snap)), None)
            }
            Err(e) => {
                // The connection is suspect: the next interval opens a fresh one.
                let old = probes.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
                stats.up = Some(false);
                stats.failed_scans += 1;
                let reason = e.to_string();
                if was_up != Some(false) {
                    tracing::warn!(
                        duration_ms = elapsed.as_millis() as u64,
                        "scan failed, retrying every interval: {}",
                        terminal_line(&reason)
                    );
                } else {
                    tracing::debug!("scan failed again: {}", terminal_line(&reason));
                }
                (None, Some(reason))
            }
        };
        // Publish before health turns green, so a scraper that waited for /healthz finds
        // this scan's numbers.
        shared.publish(metrics::render(snapshot, &stats));
        shared.update_health(|h| {
            if failure.is_none() {
                h.last_success = Some(Instant::now());
            }
            h.last_failure = failure;
            h.scan_started = None;
        });

        let next = tick + interval;
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            thread::sleep((next - now).min(POLL));
        }
    }
}

/// Remembers each guest's agent status so a frozen or absent agent is logged when it
/// changes, not on every scan.
#[derive(Default)]
struct AgentWatch {
    last: HashMap<String, AgentStatus>,
}

impl AgentWatch {
    fn log_changes(&mut self, snap: &Snapshot) {
        let mut seen = HashMap::with_capacity(snap.vms.len());
        for vm in &snap.vms {
            let before = self.last.get(&vm.uuid).copied();
            if before != Some(vm.agent) {
                let name = sanitize(&vm.name);
                let status = vm.agent.as_str();
                match (before, vm.agent) {
                    (_, AgentStatus::Timeout | AgentStatus::Error) => tracing::warn!(
                        domain = %name,
                        agent = status,
                        "guest agent of {name} is {status}: {}",
                        terminal_line(vm.os.reason.as_deref().unwrap_or(""))
                    ),
                    // First sight of a quiet, healthy or stopped guest: nothing to say.
                    (None, _) => {}
                    (Some(b), _) => tracing::info!(
                        domain = %name,
                        agent = status,
                        "guest agent of {name}: {} -> {status}",
                        b.as_str()
                    ),
                }
            }
            seen.insert(vm.uuid.clone(), vm.agent);
        }
        self.last = seen;
    }
}

#[cfg(test)]
mod tests;
