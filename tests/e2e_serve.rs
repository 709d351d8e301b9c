//! End-to-end: `serve` against the real harness. The binary runs as a process, scraped over
//! loopback by our own tiny client, by `promtool`, and by a real Prometheus server.
//!
//! The shared libvirtd is never stopped: the outage test points the exporter at a socat
//! proxy of libvirtd's socket and kills the proxy instead.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A program the test needs, under the skip policy.
fn needs(program: &str) -> bool {
    require(
        on_path(program),
        program,
        "`scripts/harness.sh deps` provides it (PATH gets $HARNESS_BIN)",
    )
}

/// The exporter process; killed when dropped.
struct Exporter {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _cache: tempfile::TempDir,
}

impl Exporter {
    fn start(backend: &str, uri: &str, extra_global: &[&str], interval: u64) -> Exporter {
        let cache = tempfile::tempdir().unwrap();
        let (child, addr, log) = spawn_serve(
            tool_process(cache.path())
                .args(["-c", uri, "--backend", backend])
                .args(extra_global)
                .args(["serve", "--listen", "127.0.0.1:0", "--interval"])
                .arg(interval.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        );
        Exporter {
            child,
            addr,
            log,
            _cache: cache,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (st, _, body) = http_get(self.addr, path, None);
        (st, body)
    }

    fn wait_health(&self, want: u16, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let (st, body) = self.get("/healthz");
            if st == want {
                return body;
            }
            assert!(
                Instant::now() < end,
                "healthz stayed {st} {body:?}, wanted {want}; log: {:#?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_live_scrape_passes_promtool_on_both_backends() {
    if !harness_available() || !needs("promtool") {
        return;
    }
    for backend in BACKENDS {
        let e = Exporter::start(backend, harness_uri(), &["--probe-timeout", "3"], 2);
        e.wait_health(200, Duration::from_secs(30));
        let (st, ctype, text) = http_get(e.addr, "/metrics", None);
        assert_eq!(st, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");

        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{backend}: promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // Every harness guest, running or not, with the facts the peer exporter lacks.
        for vm in [
            UBUNTU,
            CENTOS,
            DEBIAN_EXEC,
            NO_AGENT,
            FROZEN,
            PAUSED,
            WIN_OFF,
        ] {
            assert!(
                text.contains(&format!("libvirt_domain_info{{domain=\"{vm}\"")),
                "{backend}: {vm} missing:\n{text}"
            );
        }
        for needle in [
            "libvirt_up 1\n",
            "libvirt_domain_state{domain=\"diq-win2k22\",state=\"shut_off\"} 5\n",
            "libvirt_domain_state{domain=\"diq-paused\",state=\"paused\"} 3\n",
            "libvirt_domain_memory_maximum_bytes{domain=\"diq-win2k22\"} 2147483648\n",
            "os_pretty_name=\"Microsoft Windows Server 2022\"",
            "libvirt_domain_agent_status{domain=\"diq-noagent\",status=\"absent\"} 1\n",
            "libvirt_domain_agent_status{domain=\"diq-frozen\",status=\"timeout\"} 1\n",
            "libvirt_domain_media_info{domain=\"diq-centos\",drive=\"sda\",iso=\"\"} 1\n",
        ] {
            assert!(text.contains(needle), "{backend}: no {needle:?} in\n{text}");
        }

        let (st, ctype, om) = http_get(
            e.addr,
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        );
        assert_eq!(st, 200);
        assert_eq!(
            ctype,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(om.ends_with("# EOF\n"));
    }
}

#[test]
fn a_real_prometheus_scrapes_the_guests_os() {
    if !harness_available() || !needs("prometheus") {
        return;
    }
    let e = Exporter::start("native", harness_uri(), &["--probe-timeout", "3"], 2);
    e.wait_health(200, Duration::from_secs(30));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: diq\n    static_configs:\n      - targets: ['{}']\n",
            e.addr
        ),
    )
    .unwrap();
    let port = free_port();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let query = |q: &str| -> Option<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        // Refused while Prometheus is still starting.
        let (st, _, body) = try_http_get(api, &path, None).ok()?;
        (st == 200).then(|| serde_json::from_str(&body).unwrap())
    };
    // Prometheus starts, scrapes every second; the ubuntu guest may be briefly busy with
    // another test, so wait for its series rather than demand it on the first scrape.
    let end = Instant::now() + Duration::from_secs(60);
    let found = loop {
        if let Some(v) = query("libvirt_domain_info") {
            let series = v["data"]["result"].as_array().cloned().unwrap_or_default();
            let ubuntu = series.iter().find(|s| {
                s["metric"]["domain"] == UBUNTU
                    && s["metric"]["os_pretty_name"] == "Ubuntu 18.04.6 LTS"
            });
            if let Some(u) = ubuntu {
                break (u.clone(), series);
            }
        }
        assert!(
            Instant::now() < end,
            "Prometheus never returned diq-ubuntu's OS; its log: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (ubuntu, series) = found;
    assert_eq!(ubuntu["metric"]["os_id"], "ubuntu");
    assert_eq!(ubuntu["metric"]["os_source"], "guest-get-osinfo");
    assert_eq!(ubuntu["metric"]["job"], "diq");
    assert!(
        series.iter().any(|s| s["metric"]["domain"] == WIN_OFF
            && s["metric"]["os_source"] == "libosinfo-metadata"),
        "{series:?}"
    );
    // The scrape itself succeeded in OpenMetrics (up is 1 only for a parsed scrape).
    let up = query("up{job=\"diq\"}").unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

/// socat proxy of libvirtd's socket, in its own process group so killing the group also
/// ends the per-connection children (and so the exporter's open connection).
struct Proxy {
    child: Option<Child>,
}

impl Proxy {
    fn start(sock: &Path) -> Proxy {
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork,unlink-early", sock.display()))
            .arg(format!("UNIX-CONNECT:{}", harness_socket()))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            assert!(
                Instant::now() < end,
                "socat did not create {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy { child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the process group we created; no memory is involved.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn healthz_follows_libvirt_going_away_and_coming_back() {
    if !harness_available() || !needs("socat") {
        return;
    }
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("libvirt-sock");
        let uri = format!("qemu+unix:///session?socket={}", sock.display());
        let mut proxy = Proxy::start(&sock);
        let e = Exporter::start(backend, &uri, &["--probe-timeout", "2"], 1);
        e.wait_health(200, Duration::from_secs(30));

        proxy.stop();
        let _ = std::fs::remove_file(&sock);
        let body = e.wait_health(503, Duration::from_secs(15));
        assert!(body.starts_with("libvirt down: "), "{backend}: {body:?}");
        assert_eq!(body.lines().count(), 1, "{body:?}");
        let (_, m) = e.get("/metrics");
        assert!(m.contains("\nlibvirt_up 0\n"), "{backend}:\n{m}");
        assert!(!m.contains("libvirt_domain_info{"), "{backend}:\n{m}");

        let _proxy = Proxy::start(&sock);
        e.wait_health(200, Duration::from_secs(20));
        let (_, m) = e.get("/metrics");
        assert!(m.contains("\nlibvirt_up 1\n"), "{backend}:\n{m}");
        assert!(m.contains("libvirt_domain_info{domain=\"diq-ubuntu\""));
        let log = e.log_lines().join("\n");
        assert!(log.contains("reachable again"), "{backend}: {log}");
    }
}

#[test]
fn the_frozen_guest_never_delays_a_scrape_and_is_logged_once() {
    if !harness_available() {
        return;
    }
    // Every scan asks the frozen agent again (cache TTL 1 s) and waits out the deadline.
    let e = Exporter::start(
        "native",
        harness_uri(),
        &["--probe-timeout", "3", "--cache-ttl", "1"],
        1,
    );
    let mut worst = Duration::ZERO;
    let mut times = Vec::new();
    let end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < end {
        let t = Instant::now();
        let (st, _) = e.get("/metrics");
        assert_eq!(st, 200);
        let took = t.elapsed();
        worst = worst.max(took);
        times.push(took);
        std::thread::sleep(Duration::from_millis(50));
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "{} scrapes while scans waited on {FROZEN}: median {median:?}, worst {worst:?}",
        times.len()
    );
    assert!(
        worst < Duration::from_millis(500),
        "worst scrape {worst:?} (median {median:?}) while scans waited on {FROZEN}"
    );
    let log = e.log_lines();
    let scans = log.iter().filter(|l| l.contains("scan finished")).count();
    assert!(scans >= 2, "expected several scans: {log:#?}");
    let frozen = log
        .iter()
        .filter(|l| l.contains(&format!("guest agent of {FROZEN}")))
        .count();
    assert_eq!(
        frozen, 1,
        "{FROZEN} logged {frozen} times over {scans} scans: {log:#?}"
    );
}

#[test]
fn sigterm_stops_it_within_seconds_even_mid_scan() {
    if !harness_available() {
        return;
    }
    for (backend, settle) in [("native", true), ("virsh", false)] {
        // A fresh cache: the first scan waits on the frozen agent for its whole deadline.
        let mut e = Exporter::start(backend, harness_uri(), &["--probe-timeout", "5"], 2);
        if settle {
            e.wait_health(200, Duration::from_secs(30));
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        let t0 = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(e.child.id() as i32, libc::SIGTERM);
        }
        let end = t0 + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = e.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < end,
                "{backend}: still running 5 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{backend}: {status:?}");
        eprintln!("{backend}: stopped {:?} after SIGTERM", t0.elapsed());
    }
}
