//! The exporter end to end over the fake hypervisor: real sockets, the real scan loop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::{DomainState, HvError};

/// Scans every `interval` with a deadline of `scan_deadline`, no OS cache file.
fn options(scan_deadline: Duration, interval: Duration) -> ServeOptions {
    ServeOptions {
        interval,
        stale_after: ServeOptions::default_stale_after(interval, scan_deadline),
        probes: ProbeSettings {
            deadline: scan_deadline,
            ..ProbeSettings::default()
        },
        cache: None,
    }
}

fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-type:")
                .then(|| l[13..].trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

/// The raw answer bytes of one GET with extra header lines.
fn get_raw(addr: SocketAddr, path: &str, headers: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n{headers}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    raw
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ubuntu() -> FakeDomain {
    FakeDomain::new("diq-ubuntu", DomainState::Running).with_agent(|_, cmd| {
        match cmd["execute"].as_str() {
            Some("guest-get-osinfo") => Ok(serde_json::json!({
                "id": "ubuntu", "pretty-name": "Ubuntu 18.04.6 LTS", "name": "Ubuntu"
            })),
            _ => Ok(serde_json::json!({})),
        }
    })
}

fn start_fake(fake: &FakeHypervisor, interval: Duration, probe_timeout: Duration) -> Running {
    let hv = fake.clone();
    let opener: Opener = Arc::new(move || Ok(Arc::new(hv.clone()) as Arc<dyn Hypervisor>));
    start(
        options(probe_timeout, interval),
        opener,
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap()
}

#[test]
fn serves_metrics_health_index_and_404() {
    let fake = FakeHypervisor::new()
        .with_domain(ubuntu())
        .with_domain(FakeDomain::new("diq-off", DomainState::ShutOff));
    let r = start_fake(&fake, Duration::from_millis(200), Duration::from_secs(2));
    wait_for("first scan", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });

    let (st, ct, body) = get(r.addr, "/metrics", None);
    assert_eq!(st, 200);
    assert_eq!(ct, TEXT_CONTENT_TYPE_FOR_TEST);
    assert!(
        body.contains("os_pretty_name=\"Ubuntu 18.04.6 LTS\""),
        "{body}"
    );
    assert!(body.contains("libvirt_domain_state{domain=\"diq-off\",state=\"shut_off\"} 5"));

    let (st, ct, body) = get(
        r.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    );
    assert_eq!(st, 200);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"));

    let (st, _, body) = get(r.addr, "/healthz", None);
    assert_eq!((st, body.as_str()), (200, "ok\n"));
    let (st, ct, body) = get(r.addr, "/", None);
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/html"));
    assert!(body.contains("href=\"/metrics\"") && body.contains("href=\"/healthz\""));
    assert_eq!(get(r.addr, "/nope", None).0, 404);

    // Prometheus asks for gzip: same bytes, compressed once per scan.
    let e = r.shared.exposition();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&e.openmetrics_gzip[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, e.openmetrics.to_vec());
    let raw = get_raw(r.addr, "/metrics", "Accept-Encoding: gzip\r\n");
    assert!(raw
        .windows(24)
        .any(|w| w.eq_ignore_ascii_case(b"Content-Encoding: gzip\r\n")));
    assert!(
        raw.len() < e.text.len() / 2,
        "{} vs {}",
        raw.len(),
        e.text.len()
    );
    assert_eq!(get(r.addr, "/metrics?x=1", None).0, 200);

    let t0 = Instant::now();
    r.stop();
    r.wait();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

const TEXT_CONTENT_TYPE_FOR_TEST: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The fake behind a switch: while `down`, listing fails the way a dead libvirtd does.
struct Switchable {
    inner: FakeHypervisor,
    down: Arc<AtomicBool>,
}

impl Hypervisor for Switchable {
    fn uri(&self) -> String {
        self.inner.uri()
    }
    fn list_domains(&self) -> HvResult<Vec<crate::hypervisor::DomainInfo>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(HvError::Unreachable {
                uri: "fake:///test".into(),
                detail: "Connection refused".into(),
            });
        }
        self.inner.list_domains()
    }
    fn domain_xml(&self, d: &str, s: crate::hypervisor::XmlScope) -> HvResult<String> {
        self.inner.domain_xml(d, s)
    }
    fn agent_command(
        &self,
        d: &str,
        c: &serde_json::Value,
        t: Duration,
    ) -> HvResult<serde_json::Value> {
        self.inner.agent_command(d, c, t)
    }
    fn update_device(
        &self,
        d: &str,
        x: &str,
        s: crate::hypervisor::ChangeScope,
        f: bool,
    ) -> HvResult<()> {
        self.inner.update_device(d, x, s, f)
    }
    fn attach_device(&self, d: &str, x: &str, s: crate::hypervisor::ChangeScope) -> HvResult<()> {
        self.inner.attach_device(d, x, s)
    }
    fn list_volumes(&self) -> HvResult<Vec<crate::hypervisor::StorageVolume>> {
        self.inner.list_volumes()
    }
}

#[test]
fn libvirt_going_away_turns_health_red_and_back() {
    let fake = FakeHypervisor::new().with_domain(ubuntu());
    let down = Arc::new(AtomicBool::new(false));
    let (hv, flag) = (fake.clone(), Arc::clone(&down));
    let opener: Opener = Arc::new(move || {
        if flag.load(Ordering::SeqCst) {
            return Err(HvError::Unreachable {
                uri: "fake:///test".into(),
                detail: "Connection refused".into(),
            });
        }
        Ok(Arc::new(Switchable {
            inner: hv.clone(),
            down: Arc::clone(&flag),
        }) as Arc<dyn Hypervisor>)
    });
    let r = start(
        options(Duration::from_secs(1), Duration::from_millis(100)),
        opener,
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    wait_for("healthy", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });
    down.store(true, Ordering::SeqCst);
    wait_for("unhealthy", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 503
    });
    let (_, _, body) = get(r.addr, "/healthz", None);
    assert!(body.starts_with("libvirt down: "), "{body}");
    assert_eq!(body.lines().count(), 1);
    let (_, _, m) = get(r.addr, "/metrics", None);
    assert!(m.contains("libvirt_up 0"), "{m}");
    assert!(!m.contains("diq-ubuntu"));

    down.store(false, Ordering::SeqCst);
    wait_for("healthy again", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });
    let (_, _, m) = get(r.addr, "/metrics", None);
    assert!(m.contains("libvirt_up 1"), "{m}");
    r.stop();
    r.wait();
}

#[test]
fn reconnects_through_the_opener_after_a_failure() {
    use std::sync::atomic::AtomicUsize;
    let fake = FakeHypervisor::new().with_domain(ubuntu());
    let opens = Arc::new(AtomicUsize::new(0));
    let (hv, n) = (fake.clone(), Arc::clone(&opens));
    // The first open fails (libvirtd not up yet), later ones work.
    let opener: Opener = Arc::new(move || {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(HvError::Unreachable {
                uri: "fake:///test".into(),
                detail: "no socket".into(),
            })
        } else {
            Ok(Arc::new(hv.clone()) as Arc<dyn Hypervisor>)
        }
    });
    let r = start(
        options(Duration::from_secs(1), Duration::from_millis(100)),
        opener,
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    wait_for("healthy", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });
    let after_first = opens.load(Ordering::SeqCst);
    assert_eq!(after_first, 2);
    // Successful scans reuse the connection.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(opens.load(Ordering::SeqCst), 2);
    let (_, _, m) = get(r.addr, "/metrics", None);
    assert!(m.contains("dismount_iso_qemu_scan_errors_total 1"), "{m}");
    r.stop();
    r.wait();
}

#[test]
fn a_frozen_guest_never_delays_a_scrape() {
    let frozen = FakeDomain::new("diq-frozen", DomainState::Running)
        .with_agent(|_, _| Ok(serde_json::json!({})))
        .with_agent_delay(Duration::from_secs(3));
    let fake = FakeHypervisor::new()
        .with_domain(ubuntu())
        .with_domain(frozen);
    let r = start_fake(&fake, Duration::from_secs(30), Duration::from_secs(2));
    // The first scan waits 2 s on the frozen agent; scrapes meanwhile are instant.
    let mut worst = Duration::ZERO;
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let t = Instant::now();
        let (st, _, _) = get(r.addr, "/metrics", None);
        assert_eq!(st, 200);
        worst = worst.max(t.elapsed());
    }
    assert!(worst < Duration::from_millis(200), "worst scrape {worst:?}");
    wait_for("first scan", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });
    let (_, _, m) = get(r.addr, "/metrics", None);
    assert!(
        m.contains("libvirt_domain_agent_status{domain=\"diq-frozen\",status=\"timeout\"} 1"),
        "{m}"
    );
    r.stop();
    r.wait();
}

#[test]
fn many_concurrent_scrapes_stay_fast() {
    let mut fake = FakeHypervisor::new();
    for i in 0..300 {
        fake = fake.with_domain(FakeDomain::new(&format!("vm-{i:03}"), DomainState::ShutOff));
    }
    let r = start_fake(&fake, Duration::from_secs(30), Duration::from_secs(1));
    wait_for("first scan", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });
    let addr = r.addr;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..200)
        .map(|_| std::thread::spawn(move || get(addr, "/metrics", None)))
        .collect();
    for h in handles {
        let (st, _, body) = h.join().unwrap();
        assert_eq!(st, 200);
        assert!(body.contains("vm-299"));
    }
    // Generous for a loaded 2-core CI machine; the benchmark measures the real numbers.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    r.stop();
    r.wait();
}

#[test]
fn a_panicking_adapter_costs_one_scan_not_the_exporter() {
    use std::sync::atomic::AtomicUsize;
    let fake = FakeHypervisor::new().with_domain(ubuntu());
    let opens = Arc::new(AtomicUsize::new(0));
    let (hv, n) = (fake.clone(), Arc::clone(&opens));
    let opener: Opener = Arc::new(move || {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("adapter bug (expected by this test)");
        }
        Ok(Arc::new(hv.clone()) as Arc<dyn Hypervisor>)
    });
    let r = start(
        options(Duration::from_secs(1), Duration::from_millis(100)),
        opener,
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    wait_for("healthy after the panic", Duration::from_secs(5), || {
        get(r.addr, "/healthz", None).0 == 200
    });
    let (_, _, m) = get(r.addr, "/metrics", None);
    assert!(m.contains("dismount_iso_qemu_scan_errors_total 1"), "{m}");
    r.stop();
    r.wait();
}

#[test]
fn listen_addresses_parse() {
    assert_eq!(
        parse_listen("127.0.0.1:9177").unwrap(),
        "127.0.0.1:9177".parse().unwrap()
    );
    assert!(parse_listen("[::1]:9177").unwrap().ip().is_loopback());
    assert!(parse_listen("nonsense").is_err());
}

#[test]
fn agent_changes_are_logged_once() {
    // AgentWatch only keeps the last status per VM: identical scans change nothing.
    let mut w = AgentWatch::default();
    let mut snap = Snapshot {
        uri: "x".into(),
        taken_at: 0,
        duration_ms: 0,
        vms: Vec::new(),
        errors: Vec::new(),
        telemetry: None,
    };
    let mut row = crate::snapshot::VmRow {
        name: "diq-frozen".into(),
        uuid: "u".into(),
        state: DomainState::Running,
        persistent: true,
        vcpus: 1,
        memory_used_kib: 1,
        memory_max_kib: 1,
        cpu_time_seconds: 0.0,
        media: Vec::new(),
        media_error: None,
        os: crate::snapshot::OsAnswer::unknown("agent timed out"),
        agent: AgentStatus::Timeout,
        probe_ms: None,
        ages: Default::default(),
    };
    snap.vms.push(row.clone());
    w.log_changes(&snap);
    assert_eq!(w.last.get("u"), Some(&AgentStatus::Timeout));
    row.agent = AgentStatus::Ok;
    snap.vms = vec![row];
    w.log_changes(&snap);
    assert_eq!(w.last.get("u"), Some(&AgentStatus::Ok));
    snap.vms.clear();
    w.log_changes(&snap);
    assert!(w.last.is_empty());
}

#[test]
fn probe_serves_each_configured_target_from_its_own_scans() {
    // Both hosts' agents answer after 300 ms: in time for the default host's deadline,
    // late for the far host's own one.
    let slow = || ubuntu().with_agent_delay(Duration::from_millis(300));
    let default = FakeHypervisor::new().with_domain(slow());
    let other = FakeHypervisor::new()
        .with_uri("fake:///far")
        .with_domain(FakeDomain::new("far-vm", DomainState::ShutOff))
        .with_domain(slow());
    let opener_of = |hv: &FakeHypervisor| -> Opener {
        let hv = hv.clone();
        Arc::new(move || Ok(Arc::new(hv.clone()) as Arc<dyn Hypervisor>))
    };
    let down: Opener = Arc::new(|| {
        Err(crate::hypervisor::HvError::Unreachable {
            uri: "qemu+ssh://gone/system".into(),
            detail: "no route to host".into(),
        })
    });
    let shared = SharedCache {
        cache: Arc::new(Mutex::new(OsCache::in_memory())),
        saving: ProbeSettings::default(),
    };
    let with_cache = |o: ServeOptions| ServeOptions {
        cache: Some(shared.clone()),
        ..o
    };
    let base = with_cache(options(Duration::from_secs(2), Duration::from_millis(200)));
    let far = with_cache(options(
        Duration::from_millis(100),
        Duration::from_millis(200),
    ));
    let target = |name: &str, opener: Opener, options: &ServeOptions| Target {
        name: name.to_string(),
        opener,
        options: options.clone(),
    };
    let r = start_with(
        base.clone(),
        opener_of(&default),
        vec![
            target("far", opener_of(&other), &far),
            target("gone", down, &base),
        ],
        http::Endpoint::plain("127.0.0.1:0".parse().unwrap()),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    wait_for(
        "the far target's first scan",
        Duration::from_secs(5),
        || get(r.addr, "/probe?target=far", None).2.contains("far-vm"),
    );
    let (st, _, body) = get(r.addr, "/probe?target=far", None);
    assert_eq!(st, 200);
    assert!(body.contains("libvirt_up 1"), "{body}");
    // The far host's own deadline: its agent is late there, in time on the default host.
    assert!(
        body.contains("libvirt_domain_agent_status{domain=\"diq-ubuntu\",status=\"timeout\"} 1"),
        "{body}"
    );
    // The default host stays on /metrics.
    let answered = "libvirt_domain_agent_status{domain=\"diq-ubuntu\",status=\"ok\"} 1";
    wait_for("the default scan", Duration::from_secs(5), || {
        get(r.addr, "/metrics", None).2.contains(answered)
    });
    assert!(!get(r.addr, "/metrics", None).2.contains("far-vm"));
    // Both loops keep their answers in the one cache they share: the default host's OS,
    // the far host's remembered timeout.
    let uuid = ubuntu().info.uuid;
    let cache = shared.cache.lock().unwrap();
    let ok = cache
        .get("fake:///test", &uuid, 3600)
        .expect("the default host's answer");
    assert_eq!(ok.agent, AgentStatus::Ok);
    let late = cache
        .get("fake:///far", &uuid, 3600)
        .expect("the far host's timeout");
    assert_eq!(late.agent, AgentStatus::Timeout);
    drop(cache);
    // A target whose host is down says so in its own metrics, the others are untouched.
    wait_for(
        "the gone target's first scan",
        Duration::from_secs(5),
        || {
            get(r.addr, "/probe?target=gone", None)
                .2
                .contains("libvirt_up 0")
        },
    );
    // Percent-encoding is decoded; unknown and missing targets are clear.
    assert_eq!(get(r.addr, "/probe?target=%66ar", None).0, 200);
    let (st, _, body) = get(r.addr, "/probe?target=nope", None);
    assert_eq!(st, 404);
    assert_eq!(
        body,
        "unknown target \"nope\": /probe serves the config file's hosts (far, gone)\n"
    );
    let (st, _, body) = get(r.addr, "/probe", None);
    assert_eq!(st, 400);
    assert!(body.contains("/probe?target=NAME (the config file's hosts: far, gone)"));
    r.stop();
}

#[test]
fn query_parameters_are_decoded_and_bounded() {
    use super::http::query_param;
    assert_eq!(
        query_param("/probe?target=a", "target").as_deref(),
        Some("a")
    );
    assert_eq!(
        query_param("/probe?x=1&target=b%20c", "target").as_deref(),
        Some("b c")
    );
    assert_eq!(
        query_param("/probe?target=a+b#frag", "target").as_deref(),
        Some("a b")
    );
    assert_eq!(query_param("/probe?target=", "target"), None);
    assert_eq!(query_param("/probe?target=%zz", "target"), None);
    assert_eq!(query_param("/probe?target=%ff", "target"), None);
    assert_eq!(query_param("/probe?target=%4", "target"), None);
    assert_eq!(query_param("/probe", "target"), None);
}
