//! ProbeManager: one scan of a connection → a [`Snapshot`].
//!
//! Cheap facts (state, memory, CPU, XML) are read fresh every time. Guest OS answers need
//! the guest agent, which can be absent, disabled or frozen, so they run on a bounded
//! pool with one probe (and so at most one agent call) in flight per VM, under a deadline
//! the tool enforces itself: the snapshot is finished when every probe answered or the
//! deadline passed, and a late answer is dropped. Answers and timeouts are cached with a
//! TTL so a frozen agent costs its timeout once per TTL, not once per scan.

pub mod cache;
pub mod os;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::domxml;
use crate::hypervisor::{DomainInfo, DomainStats, HvError, HvResult, Hypervisor, XmlScope};
use crate::snapshot::telemetry::{DomainTelemetry, Families, Telemetry};
use crate::snapshot::{AgentStatus, FactAges, OsAnswer, OsSource, Snapshot, VmRow};
use crate::term::progress::Progress;

use cache::{now_unix, CacheEntry, OsCache, Ttls};
use os::OsinfoDb;

/// Why a running guest's agent was not asked with `ask_agents` off.
pub const NOT_ASKED_READ_ONLY: &str = "read-only: guest agents are not asked";

/// How long a shut-off domain's XML facts are reused by default.
pub const DEFAULT_DEFINITION_TTL: Duration =
    Duration::from_secs(crate::config::DEFAULT_DEFINITION_TTL_SECS);

/// Settings of the probe manager (from flags, environment, config file, defaults).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// How long the whole scan waits for guest agents.
    pub deadline: Duration,
    /// How long OS answers (and remembered timeouts) stay valid.
    pub cache_ttl: Duration,
    /// Size of the probe pool.
    pub jobs: usize,
    /// Ignore cached answers (fresh answers are still stored).
    pub no_cache: bool,
    /// Where the cache persists; `None` keeps it in memory only.
    pub cache_path: Option<PathBuf>,
    /// `serve`'s metric families: with any on, each scan also makes one bulk statistics
    /// call and keeps what describes each disk and interface ([`Snapshot::telemetry`]).
    /// `scan` collects none.
    pub collect: Families,
    /// Ask guest agents. `serve --read-only` does not (a read-only connection may not):
    /// running guests then get their OS from the cache and the libosinfo metadata only.
    pub ask_agents: bool,
    /// How long the facts read from a shut-off domain's XML are reused while its
    /// definition tag stays the same (0: read every XML on every scan).
    pub definition_ttl: Duration,
    /// How long a host's domain list (state, memory, CPU time, definition tags) is
    /// reused instead of asked again; 0 (the default) asks every scan. Only scans that
    /// collect no metric families reuse it: `serve` and `top` are always fresh.
    pub stats_ttl: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            deadline: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            jobs: 32,
            no_cache: false,
            cache_path: None,
            collect: Families::NONE,
            ask_agents: true,
            definition_ttl: DEFAULT_DEFINITION_TTL,
            stats_ttl: Duration::ZERO,
        }
    }
}

/// What one agent probe found.
#[derive(Debug, Clone)]
struct ProbeOutcome {
    agent: AgentStatus,
    /// `Some` when the agent told us the OS.
    os: Option<OsAnswer>,
    /// Why the agent gave no OS.
    reason: Option<String>,
    /// The connection to libvirt itself failed during the probe.
    lost: Option<HvError>,
}

pub struct ProbeManager {
    hv: Arc<dyn Hypervisor>,
    settings: ProbeSettings,
    /// Shared by the managers of a fleet scan: one file, keyed by URI, saved whole.
    cache: Arc<Mutex<OsCache>>,
    /// Whether each scan saves the cache file; a shared cache is saved once by its owner.
    saves_cache: bool,
    /// UUIDs whose probe is still running (possibly from an earlier scan): never start a
    /// second one, libvirt would only queue it behind the first.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// A bulk statistics call is still running (possibly from an earlier scan): never
    /// start a second one, it would only queue behind the first.
    stats_busy: Arc<AtomicBool>,
    osinfo: OsinfoDb,
}

impl ProbeOutcome {
    fn answered(os: OsAnswer) -> ProbeOutcome {
        ProbeOutcome {
            agent: AgentStatus::Ok,
            os: Some(os),
            reason: None,
            lost: None,
        }
    }

    fn without_os(agent: AgentStatus, reason: String) -> ProbeOutcome {
        ProbeOutcome {
            agent,
            os: None,
            reason: Some(reason),
            lost: None,
        }
    }

    /// The agent failed with `e`.
    fn failed(e: &HvError) -> ProbeOutcome {
        let (agent, reason) = agent_failure(e);
        let mut o = ProbeOutcome::without_os(agent, reason);
        if matches!(e, HvError::Unreachable { .. }) {
            o.lost = Some(e.clone());
        }
        o
    }
}

fn agent_failure(e: &HvError) -> (AgentStatus, String) {
    match e {
        HvError::AgentNotConnected(_) => (AgentStatus::Absent, "agent not connected".into()),
        HvError::AgentBroken(_) => (
            AgentStatus::Error,
            "agent sent a reply libvirt could not read".into(),
        ),
        HvError::ExecUnfinished { program, .. } => (
            AgentStatus::Ok,
            format!("the guest's {program} did not finish by the deadline"),
        ),
        HvError::AgentTimeout(_) => (AgentStatus::Timeout, "agent timed out".into()),
        HvError::AgentCommandDisabled { command, .. } => (
            AgentStatus::Disabled,
            format!("{command} is disabled in the guest agent"),
        ),
        HvError::DomainNotRunning(_) => (AgentStatus::NotAsked, "VM not running".into()),
        other => (AgentStatus::Error, format!("agent error: {other}")),
    }
}

/// Is this failure of `guest-get-osinfo` one the guest-exec fallback can work around?
fn osinfo_unavailable(e: &HvError) -> bool {
    match e {
        HvError::AgentCommandDisabled { .. } => true,
        HvError::AgentCommandFailed { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("not been found") || m.contains("not found") || m.contains("unknown command")
        }
        _ => false,
    }
}

/// The OS detection chain for one running guest: `guest-get-osinfo`, then `guest-exec`.
fn probe_guest(hv: &dyn Hypervisor, domain: &str, deadline: Instant) -> ProbeOutcome {
    let call_timeout = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    let agent = Agent::new(hv, domain, call_timeout(deadline));
    let osinfo_reason = match agent.osinfo() {
        Ok(info) => {
            if let Some(text) = os::from_osinfo(&info) {
                let os = OsAnswer::known(text, info.id, OsSource::GuestGetOsinfo);
                return ProbeOutcome::answered(os);
            }
            "guest-get-osinfo gave no name".to_string()
        }
        Err(e) if osinfo_unavailable(&e) => agent_failure(&e).1,
        Err(e) => return ProbeOutcome::failed(&e),
    };

    // Fallback: ask the guest to print what it is. Linux first, then Windows.
    type Parse = fn(&str) -> Option<(String, Option<String>)>;
    let attempts: [(&str, &[&str], Parse); 4] = [
        ("cat", &["/etc/os-release"], os::from_os_release),
        ("cat", &["/usr/lib/os-release"], os::from_os_release),
        ("uname", &["-sr"], |s| os::from_uname(s).map(|t| (t, None))),
        ("cmd.exe", &["/c", "ver"], |s| {
            os::from_windows_ver(s).map(|t| (t, Some("mswindows".to_string())))
        }),
    ];
    for (path, args, parse) in attempts {
        let agent = Agent::new(hv, domain, call_timeout(deadline));
        match agent.exec(path, args, deadline) {
            Ok(out) if out.success() => {
                if let Some((text, id)) = parse(&String::from_utf8_lossy(&out.stdout)) {
                    return ProbeOutcome::answered(OsAnswer::known(text, id, OsSource::GuestExec));
                }
            }
            Ok(_) => {}
            // The program does not exist in this guest: try the next one.
            Err(HvError::AgentCommandFailed { .. }) => {}
            Err(e @ HvError::AgentCommandDisabled { .. }) => {
                let reason = format!("{osinfo_reason}; {}", agent_failure(&e).1);
                return ProbeOutcome::without_os(AgentStatus::Disabled, reason);
            }
            Err(e) => return ProbeOutcome::failed(&e),
        }
    }
    ProbeOutcome::without_os(
        AgentStatus::Ok,
        format!("{osinfo_reason}; no os-release, uname or ver answered"),
    )
}

struct Task {
    uuid: String,
    name: String,
}

impl ProbeManager {
    pub fn new(hv: Arc<dyn Hypervisor>, settings: ProbeSettings) -> ProbeManager {
        let cache = Arc::new(Mutex::new(ProbeManager::load_cache(&settings)));
        ProbeManager {
            saves_cache: true,
            ..ProbeManager::with_cache(hv, settings, cache)
        }
    }

    /// The cache `settings` name: its file, or one in memory.
    pub fn load_cache(settings: &ProbeSettings) -> OsCache {
        match &settings.cache_path {
            Some(p) => OsCache::load(p),
            None => OsCache::in_memory(),
        }
    }

    /// A manager whose cache is shared with others (one per host of a fleet scan). Its
    /// scans do not save the file: the owner saves it once, after every host (see
    /// [`save_cache`]), so no host's save drops another's entries and the file is written
    /// once, not once per host.
    pub fn with_cache(
        hv: Arc<dyn Hypervisor>,
        settings: ProbeSettings,
        cache: Arc<Mutex<OsCache>>,
    ) -> ProbeManager {
        ProbeManager {
            hv,
            settings,
            cache,
            saves_cache: false,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            stats_busy: Arc::new(AtomicBool::new(false)),
            osinfo: OsinfoDb::system(),
        }
    }

    /// Use another osinfo database (tests).
    pub fn with_osinfo_db(mut self, db: OsinfoDb) -> ProbeManager {
        self.osinfo = db;
        self
    }

    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.hv
    }

    pub fn settings(&self) -> &ProbeSettings {
        &self.settings
    }

    pub fn scan(&self) -> HvResult<Snapshot> {
        self.scan_with_progress(&Progress::default())
    }

    /// One scan. Errors only when the connection itself fails — at the start, or at any
    /// point of the scan (a table of blanks would pass for guests without agents); per-VM
    /// problems end up in the rows (and in `Snapshot::errors`).
    pub fn scan_with_progress(&self, progress: &Progress) -> HvResult<Snapshot> {
        let started = Instant::now();
        let deadline = started + self.settings.deadline;
        let uri = self.hv.uri();
        let collect = self.settings.collect;
        // Under a statistics TTL a listing young enough is reused: no call to libvirt
        // about any domain (its facts below come from the cache too, up to their TTLs).
        let stats_ttl = self.settings.stats_ttl.as_secs();
        let keep_listing = stats_ttl > 0 && collect == Families::NONE;
        let reused = keep_listing
            .then(|| lock(&self.cache).listing(&uri, stats_ttl))
            .flatten();
        // `Some(age)` when the listing came from the cache.
        let listing_age = reused.as_ref().map(|(_, age)| *age);
        let mut domains = match reused {
            Some((domains, _)) => domains,
            None => {
                let domains = self.hv.list_domains()?;
                if keep_listing {
                    lock(&self.cache).put_listing(&uri, &domains);
                }
                domains
            }
        };
        domains.sort_by(|a, b| a.name.cmp(&b.name));

        // Which guests need their agent asked now?
        let ttl = self.settings.cache_ttl.as_secs();
        let mut cached: HashMap<String, CacheEntry> = HashMap::new();
        let mut tasks = Vec::new();
        let mut busy = HashSet::new();
        {
            let cache = lock(&self.cache);
            let mut in_flight = lock(&self.in_flight);
            for d in domains.iter().filter(|d| d.state.agent_may_answer()) {
                if !self.settings.no_cache {
                    if let Some(e) = cache.get(&uri, &d.uuid, ttl) {
                        cached.insert(d.uuid.clone(), e.clone());
                        continue;
                    }
                }
                if !self.settings.ask_agents {
                    continue;
                }
                if in_flight.insert(d.uuid.clone()) {
                    tasks.push(Task {
                        uuid: d.uuid.clone(),
                        name: d.name.clone(),
                    });
                } else {
                    busy.insert(d.uuid.clone());
                }
            }
        }

        // Probes start first; the XML (media, libosinfo metadata) and the bulk statistics
        // are read while they run.
        let pending = self.start_probes(tasks, deadline, progress);
        let stats = collect
            .need_stats()
            .then(|| self.start_stats(collect, deadline));
        // A shut-off domain whose definition tag is unchanged keeps the facts read from
        // its XML before; every other domain's XML is read now. `no_cache` is about agent
        // answers; `definition_ttl` 0 is what turns this off.
        let definition_ttl = self.settings.definition_ttl.as_secs();
        let scan_started = now_unix();
        let mut known: Vec<Option<(domxml::DomainXmlFacts, u64)>> = {
            let cache = lock(&self.cache);
            domains
                .iter()
                .map(|d| {
                    let e = match listing_age {
                        Some(_) => cache.last_definition(&uri, &d.uuid, definition_ttl)?,
                        None => {
                            cache.definition(&uri, &d.uuid, d.definition_tag?, definition_ttl)?
                        }
                    };
                    Some((e.facts.clone(), scan_started.saturating_sub(e.stored_at)))
                })
                .collect()
        };
        let definition_ages: Vec<u64> = known
            .iter()
            .map(|k| k.as_ref().map_or(0, |(_, age)| *age))
            .collect();
        let names: Vec<String> = domains
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(d, _)| d.name.clone())
            .collect();
        let mut xmls = read_xmls(&self.hv, names, deadline).into_iter();
        let mut errors = Vec::new();
        let mut late = 0;
        let mut lost = None;
        let mut read_now = Vec::new();
        let facts: Vec<Result<domxml::DomainXmlFacts, String>> = domains
            .iter()
            .zip(known.iter_mut())
            .map(|(d, known)| {
                if let Some((f, _)) = known.take() {
                    return Ok(f);
                }
                let Some(xml) = xmls.next().flatten() else {
                    late += 1;
                    return Err(XML_LATE.to_string());
                };
                let f = xml
                    .inspect_err(|e| {
                        if matches!(e, HvError::Unreachable { .. }) {
                            lost = Some(e.clone());
                        }
                    })
                    .map_err(|e| e.to_string())
                    .and_then(|x| domxml::parse(&x))
                    .inspect_err(|e| errors.push(format!("{}: {e}", d.name)))?;
                // Running domains' facts are kept only for listings a statistics TTL
                // reuses.
                if d.definition_tag.is_some() || keep_listing {
                    read_now.push((d.uuid.clone(), d.definition_tag, f.clone()));
                }
                Ok(f)
            })
            .collect();
        if late > 0 {
            errors.push(format!(
                "libvirtd did not return the XML of {late} VM(s) within the probe deadline (its \
                 workers may all be waiting, e.g. on a frozen guest agent): their ISO and \
                 metadata are unknown in this scan"
            ));
        }

        let mut stats = stats.map(|s| s.wait());
        let mut outcomes = collect_probes(pending, deadline, progress);
        if let Some(e) = lost.or_else(|| outcomes.values().find_map(|(o, _)| o.lost.clone())) {
            return Err(e.during("scanning"));
        }

        // Assemble rows, remembering fresh answers and timeouts.
        let now = now_unix();
        let mut cache = lock(&self.cache);
        let mut vms = Vec::with_capacity(domains.len());
        let mut telemetry = Vec::with_capacity(domains.len());
        for ((d, facts), definition_age) in domains.into_iter().zip(facts).zip(definition_ages) {
            let (mut f, media_error) = match facts {
                Ok(f) => (f, None),
                Err(e) => (domxml::DomainXmlFacts::default(), Some(e)),
            };
            if collect != Families::NONE {
                let (stats, stats_error) = match &mut stats {
                    Some(s) => s.take(&d.name),
                    None => (None, None),
                };
                telemetry.push(DomainTelemetry {
                    stats,
                    stats_error,
                    disks: std::mem::take(&mut f.disks),
                    interfaces: std::mem::take(&mut f.interfaces),
                });
            }
            let mut os_age = None;
            let (agent, mut os, probe_ms) = if !d.state.agent_may_answer() {
                (
                    AgentStatus::NotAsked,
                    OsAnswer::unknown(format!("VM {}", d.state.as_str())),
                    None,
                )
            } else if let Some(e) = cached.remove(&d.uuid) {
                let mut os = e.os;
                os.cached = true;
                os_age = Some(now.saturating_sub(e.stored_at));
                (e.agent, os, None)
            } else if !self.settings.ask_agents {
                (
                    AgentStatus::NotAsked,
                    OsAnswer::unknown(NOT_ASKED_READ_ONLY),
                    None,
                )
            } else if busy.contains(&d.uuid) {
                (
                    AgentStatus::Timeout,
                    OsAnswer::unknown("agent timed out (an earlier probe is still waiting)"),
                    None,
                )
            } else {
                os_age = Some(0);
                // No answer by the deadline is a timeout, remembered like any other.
                let (o, ms) = match outcomes.remove(&d.uuid) {
                    Some((o, ms)) => (o, Some(ms)),
                    None => (
                        ProbeOutcome::without_os(
                            AgentStatus::Timeout,
                            format!(
                                "agent timed out (no answer within {}s)",
                                self.settings.deadline.as_secs_f64()
                            ),
                        ),
                        None,
                    ),
                };
                let remember = o.os.is_some() || o.agent == AgentStatus::Timeout;
                let os =
                    o.os.unwrap_or_else(|| OsAnswer::unknown(o.reason.unwrap_or_default()));
                if remember {
                    cache.put(
                        &uri,
                        &d.uuid,
                        CacheEntry {
                            name: d.name.clone(),
                            stored_at: now,
                            agent: o.agent,
                            os: os.clone(),
                        },
                    );
                }
                (o.agent, os, ms)
            };
            if os.text.is_none() {
                if let Some(id) = &f.libosinfo_id {
                    let reason = os.reason.take();
                    os = OsAnswer::known(
                        self.osinfo.name_for(id),
                        Some(id.clone()),
                        OsSource::LibosinfoMetadata,
                    );
                    os.reason = reason;
                }
            }
            let mut r = row(d, f, media_error, os, agent, probe_ms);
            r.ages = FactAges {
                os_seconds: os_age,
                definition_seconds: definition_age,
                statistics_seconds: listing_age.unwrap_or(0),
            };
            vms.push(r);
        }
        for (uuid, tag, f) in read_now {
            cache.put_definition(&uri, &uuid, tag, f);
        }
        let listed: HashSet<&str> = vms.iter().map(|v| v.uuid.as_str()).collect();
        cache.forget_others(&uri, &listed);
        if self.saves_cache {
            if let Err(e) = save_cache(&mut cache, &self.settings) {
                errors.push(e);
            }
        }
        if let Some(line) = stats.as_ref().and_then(StatsOutcome::summary) {
            errors.push(line);
        }
        Ok(Snapshot {
            uri,
            taken_at: now_unix(),
            duration_ms: started.elapsed().as_millis() as u64,
            vms,
            errors,
            telemetry: (collect != Families::NONE).then_some(Telemetry {
                families: collect,
                domains: telemetry,
            }),
        })
    }

    /// Start the bulk statistics call on a detached thread (a libvirtd whose workers are
    /// all stuck can hold it for long; the scan must not wait past its deadline), unless
    /// an earlier one is still running.
    fn start_stats(&self, collect: Families, deadline: Instant) -> PendingStats {
        if self.stats_busy.swap(true, Ordering::SeqCst) {
            return PendingStats::Busy;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let hv = Arc::clone(&self.hv);
        let busy = Arc::clone(&self.stats_busy);
        let groups = collect.groups();
        thread::spawn(move || {
            let result = hv.domain_stats(groups);
            busy.store(false, Ordering::SeqCst);
            // The scan may be over: then nobody listens and the answer is dropped.
            let _ = tx.send(result);
        });
        PendingStats::Started {
            rx,
            deadline,
            limit: self.settings.deadline,
        }
    }

    /// Start the probes on a bounded pool of detached workers.
    fn start_probes(&self, tasks: Vec<Task>, deadline: Instant, progress: &Progress) -> Pending {
        if tasks.is_empty() {
            return None;
        }
        progress.total.store(tasks.len(), Ordering::Relaxed);
        let expected = tasks.len();
        let (task_tx, task_rx) = crossbeam_channel::unbounded::<Task>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for t in tasks {
            // The receiver lives until the workers end; sending cannot fail here.
            let _ = task_tx.send(t);
        }
        drop(task_tx);
        for _ in 0..self.settings.jobs.clamp(1, expected) {
            let rx = task_rx.clone();
            let tx = done_tx.clone();
            let hv = Arc::clone(&self.hv);
            let in_flight = Arc::clone(&self.in_flight);
            // Detached on purpose: a worker stuck on a frozen agent must not hold up the
            // scan; its late answer goes to a closed channel and is dropped.
            thread::spawn(move || {
                for task in rx.iter() {
                    if Instant::now() >= deadline {
                        lock(&in_flight).remove(&task.uuid);
                        continue;
                    }
                    let t0 = Instant::now();
                    let outcome = probe_guest(hv.as_ref(), &task.name, deadline);
                    let ms = t0.elapsed().as_millis() as u64;
                    lock(&in_flight).remove(&task.uuid);
                    if tx.send((task.uuid, outcome, ms)).is_err() {
                        // The scan is over; later tasks would be dropped too.
                    }
                }
            });
        }
        drop(done_tx);
        Some((done_rx, expected))
    }
}

const XML_LATE: &str = "domain XML not returned within the probe deadline";

/// A bulk statistics call of this scan.
enum PendingStats {
    Started {
        rx: crossbeam_channel::Receiver<HvResult<Vec<DomainStats>>>,
        deadline: Instant,
        limit: Duration,
    },
    /// An earlier scan's call has not returned: this scan has no statistics.
    Busy,
}

impl PendingStats {
    /// The call's answer, or why there is none, by the scan's deadline (with the same
    /// grace as the XML: a healthy libvirtd answers in milliseconds).
    fn wait(self) -> StatsOutcome {
        match self {
            PendingStats::Busy => StatsOutcome::Failed(
                "an earlier statistics call is still waiting on libvirt".to_string(),
            ),
            PendingStats::Started {
                rx,
                deadline,
                limit,
            } => {
                let until = deadline.max(Instant::now() + Duration::from_millis(200));
                match rx.recv_deadline(until) {
                    Ok(Ok(all)) => StatsOutcome::Got {
                        by_name: all.into_iter().map(|s| (s.name.clone(), s)).collect(),
                        missing: Vec::new(),
                    },
                    Ok(Err(e)) => StatsOutcome::Failed(format!("statistics call failed: {e}")),
                    Err(_) => StatsOutcome::Failed(format!(
                        "no statistics within the scan deadline ({}s)",
                        limit.as_secs_f64()
                    )),
                }
            }
        }
    }
}

/// What the scan's statistics call gave.
enum StatsOutcome {
    Got {
        by_name: HashMap<String, DomainStats>,
        /// Listed domains libvirt gave no record for (filled by [`StatsOutcome::take`]).
        missing: Vec<String>,
    },
    /// Every domain's reason: the call failed, timed out, or could not start.
    Failed(String),
}

/// A domain the listing has and the statistics call left out.
const STATS_MISSING: &str = "libvirt returned no statistics for this domain";

impl StatsOutcome {
    /// `domain`'s record, or why it has none.
    fn take(&mut self, domain: &str) -> (Option<DomainStats>, Option<String>) {
        match self {
            StatsOutcome::Got { by_name, missing } => match by_name.remove(domain) {
                Some(s) => (Some(s), None),
                None => {
                    missing.push(domain.to_string());
                    (None, Some(STATS_MISSING.to_string()))
                }
            },
            StatsOutcome::Failed(reason) => (None, Some(reason.clone())),
        }
    }

    /// One line for the snapshot's errors when some domain has no statistics.
    fn summary(&self) -> Option<String> {
        match self {
            StatsOutcome::Got { missing, .. } if !missing.is_empty() => {
                const SHOWN: usize = 5;
                let mut names = missing[..missing.len().min(SHOWN)].join(", ");
                if missing.len() > SHOWN {
                    names.push_str(&format!(" and {} more", missing.len() - SHOWN));
                }
                Some(format!(
                    "domain statistics: libvirt returned none for {} VM(s): {names}",
                    missing.len()
                ))
            }
            StatsOutcome::Got { .. } => None,
            StatsOutcome::Failed(reason) => Some(format!("domain statistics: {reason}")),
        }
    }
}

/// How many domains one XML request covers: small enough that a slow daemon still yields
/// partial results, large enough that the virsh adapter needs few processes.
const XML_CHUNK: usize = 64;

/// Read the domain XML of `names` on a detached thread, in chunks; whatever has not
/// arrived by `deadline` is `None`. A libvirtd whose workers are all stuck (e.g. queued on
/// a frozen guest agent) can hold even a plain XML read for 30 s; the scan must not.
fn read_xmls(
    hv: &Arc<dyn Hypervisor>,
    names: Vec<String>,
    deadline: Instant,
) -> Vec<Option<HvResult<String>>> {
    let total = names.len();
    let (tx, rx) = crossbeam_channel::unbounded();
    let hv = Arc::clone(hv);
    thread::spawn(move || {
        for (i, chunk) in names.chunks(XML_CHUNK).enumerate() {
            let xmls = hv.domain_xmls(chunk, XmlScope::Current);
            if tx.send((i * XML_CHUNK, xmls)).is_err() {
                return;
            }
        }
    });
    let mut out: Vec<Option<HvResult<String>>> = (0..total).map(|_| None).collect();
    let mut received = 0;
    // The XML is cheap when libvirtd is healthy: give it at least a moment even when the
    // agents already used up the deadline.
    let wait_until = deadline.max(Instant::now() + Duration::from_millis(200));
    while received < total {
        match rx.recv_deadline(wait_until) {
            Ok((start, xmls)) => {
                for (j, x) in xmls.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(start + j) {
                        *slot = Some(x);
                        received += 1;
                    }
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Answers of a started probe pool: the channel and how many to expect.
type Pending = Option<(
    crossbeam_channel::Receiver<(String, ProbeOutcome, u64)>,
    usize,
)>;

/// Wait for the started probes until all answered or `deadline` passed; late answers
/// are dropped with the channel.
fn collect_probes(
    pending: Pending,
    deadline: Instant,
    progress: &Progress,
) -> HashMap<String, (ProbeOutcome, u64)> {
    let mut answers = HashMap::new();
    let Some((done_rx, expected)) = pending else {
        return answers;
    };
    while answers.len() < expected {
        match done_rx.recv_deadline(deadline) {
            Ok((uuid, outcome, ms)) => {
                answers.insert(uuid, (outcome, ms));
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => break,
        }
    }
    answers
}

/// Save `cache` with `settings`' TTLs; the error is the line to show.
pub fn save_cache(cache: &mut OsCache, settings: &ProbeSettings) -> Result<(), String> {
    cache
        .save(Ttls {
            os: settings.cache_ttl.as_secs(),
            definition: settings.definition_ttl.as_secs(),
            statistics: settings.stats_ttl.as_secs(),
        })
        .map_err(|e| format!("could not save the scan cache: {e}"))
}

/// Drop the listings of `uris` from the cache file at `path`, so that a change this tool
/// made shows in the next scan whatever the statistics TTL. Quiet: the cache only saves
/// time.
pub fn forget_listings<'a>(
    path: Option<&std::path::Path>,
    uris: impl IntoIterator<Item = &'a str>,
) {
    let Some(path) = path else { return };
    let mut cache = OsCache::load(path);
    let mut removed = false;
    for uri in uris {
        removed |= cache.remove_listing(uri);
    }
    if removed {
        let _ = cache.save(Ttls::KEEP);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking probe thread cannot leave these maps half-updated in a harmful way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn row(
    d: DomainInfo,
    f: domxml::DomainXmlFacts,
    media_error: Option<String>,
    os: OsAnswer,
    agent: AgentStatus,
    probe_ms: Option<u64>,
) -> VmRow {
    VmRow {
        name: d.name,
        uuid: d.uuid,
        state: d.state,
        persistent: d.persistent,
        vcpus: d.vcpus,
        memory_used_kib: d.memory_used_kib,
        memory_max_kib: d.memory_max_kib,
        cpu_time_seconds: d.cpu_time_ns as f64 / 1e9,
        media: f.cdroms,
        media_error,
        os,
        agent,
        probe_ms,
        ages: FactAges::default(),
    }
}

#[cfg(test)]
mod tests;
