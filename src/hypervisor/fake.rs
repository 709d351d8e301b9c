//! An in-memory hypervisor for unit tests of the decision logic above the port
//! (timeouts, caches, conflicts, batches). It records every call so tests can assert on
//! what was (and was not) asked, and lets each test script agent replies and failures.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::{
    BalloonStats, ChangeScope, DomainInfo, DomainState, DomainStats, HvError, HvResult, Hypervisor,
    StatsGroups, StorageVolume, VcpuStats, XmlScope,
};

/// Scripted behaviour of one guest agent: gets the domain name and the request.
pub type AgentScript = Arc<dyn Fn(&str, &Value) -> HvResult<Value> + Send + Sync>;
/// Scripted behaviour of device changes: gets domain, device XML, scope and force.
pub type DeviceScript = Arc<dyn Fn(&str, &str, ChangeScope, bool) -> HvResult<()> + Send + Sync>;

/// One recorded call on the port.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    ListDomains,
    DomainXml(String, XmlScope),
    Agent(String, Value),
    UpdateDevice {
        domain: String,
        xml: String,
        scope: ChangeScope,
        force: bool,
    },
    AttachDevice {
        domain: String,
        xml: String,
        scope: ChangeScope,
    },
    ListVolumes,
    DomainStats(StatsGroups),
}

/// One fake domain.
#[derive(Clone)]
pub struct FakeDomain {
    pub info: DomainInfo,
    pub xml: String,
    pub persistent_xml: Option<String>,
    pub agent: Option<AgentScript>,
    /// How long every agent call takes before its script answers.
    pub agent_delay: Duration,
    /// How long reading this domain's XML takes (a daemon whose workers are all busy).
    pub xml_delay: Duration,
    /// What the bulk statistics call returns for this domain (cut down to the groups
    /// asked for); `None`: state, CPU time, balloon and vCPU counts from `info`.
    pub stats: Option<DomainStats>,
}

impl FakeDomain {
    /// A domain with plausible numbers and a minimal XML; no agent.
    pub fn new(name: &str, state: DomainState) -> FakeDomain {
        FakeDomain {
            info: DomainInfo {
                name: name.to_string(),
                uuid: format!(
                    "00000000-0000-0000-0000-{:012x}",
                    fnv(name) & 0xffff_ffff_ffff
                ),
                state,
                persistent: true,
                vcpus: 1,
                memory_max_kib: 262_144,
                memory_used_kib: 262_144,
                cpu_time_ns: 0,
                definition_tag: None,
            },
            xml: format!("<domain type='qemu'><name>{name}</name><devices/></domain>"),
            persistent_xml: None,
            agent: None,
            agent_delay: Duration::ZERO,
            xml_delay: Duration::ZERO,
            stats: None,
        }
    }

    /// Script this domain's bulk statistics.
    pub fn with_stats(mut self, stats: DomainStats) -> FakeDomain {
        self.stats = Some(stats);
        self
    }

    /// What the bulk call reports for this domain when asked for `groups`.
    fn stats_for(&self, groups: StatsGroups) -> DomainStats {
        let mut s = self
            .stats
            .clone()
            .unwrap_or_else(|| DomainStats::from_info(&self.info, StatsGroups::ALL));
        s.name = self.info.name.clone();
        if !groups.balloon {
            s.balloon = BalloonStats::default();
        }
        if !groups.vcpu {
            s.vcpu = VcpuStats::default();
        }
        if !groups.block {
            s.blocks.clear();
        }
        if !groups.interface {
            s.interfaces.clear();
        }
        s
    }

    pub fn with_xml(mut self, xml: &str) -> FakeDomain {
        self.xml = xml.to_string();
        self
    }

    pub fn with_persistent_xml(mut self, xml: &str) -> FakeDomain {
        self.persistent_xml = Some(xml.to_string());
        self
    }

    pub fn with_agent(
        mut self,
        script: impl Fn(&str, &Value) -> HvResult<Value> + Send + Sync + 'static,
    ) -> FakeDomain {
        self.agent = Some(Arc::new(script));
        self
    }

    pub fn with_agent_delay(mut self, delay: Duration) -> FakeDomain {
        self.agent_delay = delay;
        self
    }

    /// What the native adapter derives from the bulk statistics of a shut-off domain.
    pub fn with_definition_tag(mut self, tag: u64) -> FakeDomain {
        self.info.definition_tag = Some(tag);
        self
    }

    pub fn with_xml_delay(mut self, delay: Duration) -> FakeDomain {
        self.xml_delay = delay;
        self
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Default)]
struct State {
    domains: BTreeMap<String, FakeDomain>,
    calls: Vec<Call>,
    volumes: Vec<StorageVolume>,
    list_error: Option<HvError>,
    xml_error: Option<HvError>,
    device_script: Option<DeviceScript>,
    stats_error: Option<HvError>,
    stats_delay: Duration,
    /// Domains the bulk statistics call leaves out (libvirt could not read them).
    stats_missing: HashSet<String>,
    /// The URI it answers to, when not the default `fake:///test`.
    uri: Option<String>,
}

/// The fake itself. Cheap to clone: clones share state.
#[derive(Clone, Default)]
pub struct FakeHypervisor {
    state: Arc<Mutex<State>>,
}

impl FakeHypervisor {
    pub fn new() -> FakeHypervisor {
        FakeHypervisor::default()
    }

    pub fn with_domain(self, domain: FakeDomain) -> FakeHypervisor {
        self.lock().domains.insert(domain.info.name.clone(), domain);
        self
    }

    /// Answer to `uri` (a second host of a fleet) instead of `fake:///test`.
    pub fn with_uri(self, uri: &str) -> FakeHypervisor {
        self.lock().uri = Some(uri.to_string());
        self
    }

    pub fn with_volume(self, volume: StorageVolume) -> FakeHypervisor {
        self.lock().volumes.push(volume);
        self
    }

    /// Make `list_domains` fail (libvirtd gone).
    pub fn fail_listing(&self, error: HvError) {
        self.lock().list_error = Some(error);
    }

    /// Make every `domain_xml` fail (libvirtd gone after the listing).
    pub fn fail_xml(&self, error: HvError) {
        self.lock().xml_error = Some(error);
    }

    /// Make `domain_stats` fail.
    pub fn fail_stats(&self, error: HvError) {
        self.lock().stats_error = Some(error);
    }

    /// Make `domain_stats` take this long (a daemon stuck on a monitor).
    pub fn delay_stats(&self, delay: Duration) {
        self.lock().stats_delay = delay;
    }

    /// Leave `domain` out of the bulk statistics (libvirt could not read it).
    pub fn omit_stats(&self, domain: &str) {
        self.lock().stats_missing.insert(domain.to_string());
    }

    /// Script `update_device`/`attach_device`; without a script they succeed.
    pub fn on_device_change(
        &self,
        script: impl Fn(&str, &str, ChangeScope, bool) -> HvResult<()> + Send + Sync + 'static,
    ) {
        self.lock().device_script = Some(Arc::new(script));
    }

    /// Redefine `domain` with `xml` (both scopes), under definition tag `tag`.
    pub fn redefine(&self, domain: &str, xml: &str, tag: Option<u64>) {
        if let Some(d) = self.lock().domains.get_mut(domain) {
            d.xml = xml.to_string();
            d.persistent_xml = None;
            d.info.definition_tag = tag;
        }
    }

    pub fn set_state(&self, domain: &str, state: DomainState) {
        if let Some(d) = self.lock().domains.get_mut(domain) {
            d.info.state = state;
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Agent requests sent to one domain, in order.
    pub fn agent_calls(&self, domain: &str) -> Vec<Value> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Agent(d, v) if d == domain => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test thread that panicked while holding the lock already failed its test;
        // the data is still usable for the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn domain(&self, name: &str) -> HvResult<FakeDomain> {
        self.lock()
            .domains
            .get(name)
            .cloned()
            .ok_or_else(|| HvError::NoSuchDomain(name.to_string()))
    }
}

impl Hypervisor for FakeHypervisor {
    fn uri(&self) -> String {
        let uri = self.lock().uri.clone();
        uri.unwrap_or_else(|| "fake:///test".to_string())
    }

    fn list_domains(&self) -> HvResult<Vec<DomainInfo>> {
        let mut st = self.lock();
        st.calls.push(Call::ListDomains);
        if let Some(e) = &st.list_error {
            return Err(e.clone());
        }
        Ok(st.domains.values().map(|d| d.info.clone()).collect())
    }

    fn domain_xml(&self, domain: &str, scope: XmlScope) -> HvResult<String> {
        self.lock()
            .calls
            .push(Call::DomainXml(domain.to_string(), scope));
        if let Some(e) = self.lock().xml_error.clone() {
            return Err(e);
        }
        let d = self.domain(domain)?;
        if !d.xml_delay.is_zero() {
            thread::sleep(d.xml_delay);
        }
        Ok(match scope {
            XmlScope::Current => d.xml,
            XmlScope::Persistent => d.persistent_xml.unwrap_or(d.xml),
        })
    }

    fn agent_command(&self, domain: &str, command: &Value, _timeout: Duration) -> HvResult<Value> {
        self.lock()
            .calls
            .push(Call::Agent(domain.to_string(), command.clone()));
        let d = self.domain(domain)?;
        if !d.info.state.agent_may_answer() {
            return Err(HvError::DomainNotRunning(domain.to_string()));
        }
        if !d.agent_delay.is_zero() {
            thread::sleep(d.agent_delay);
        }
        match &d.agent {
            Some(script) => script(domain, command),
            None => Err(HvError::AgentNotConnected(domain.to_string())),
        }
    }

    fn update_device(
        &self,
        domain: &str,
        device_xml: &str,
        scope: ChangeScope,
        force: bool,
    ) -> HvResult<()> {
        self.lock().calls.push(Call::UpdateDevice {
            domain: domain.to_string(),
            xml: device_xml.to_string(),
            scope,
            force,
        });
        self.domain(domain)?;
        let script = self.lock().device_script.clone();
        match script {
            Some(s) => s(domain, device_xml, scope, force),
            None => Ok(()),
        }
    }

    fn attach_device(&self, domain: &str, device_xml: &str, scope: ChangeScope) -> HvResult<()> {
        self.lock().calls.push(Call::AttachDevice {
            domain: domain.to_string(),
            xml: device_xml.to_string(),
            scope,
        });
        self.domain(domain)?;
        let script = self.lock().device_script.clone();
        match script {
            Some(s) => s(domain, device_xml, scope, false),
            None => Ok(()),
        }
    }

    fn list_volumes(&self) -> HvResult<Vec<StorageVolume>> {
        let mut st = self.lock();
        st.calls.push(Call::ListVolumes);
        Ok(st.volumes.clone())
    }

    fn domain_stats(&self, groups: StatsGroups) -> HvResult<Vec<DomainStats>> {
        let delay = {
            let mut st = self.lock();
            st.calls.push(Call::DomainStats(groups));
            st.stats_delay
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let st = self.lock();
        if let Some(e) = &st.stats_error {
            return Err(e.clone());
        }
        Ok(st
            .domains
            .values()
            .filter(|d| !st.stats_missing.contains(&d.info.name))
            .map(|d| d.stats_for(groups))
            .collect())
    }
}
