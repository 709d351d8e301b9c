//! End-to-end: `serve`'s HTTP side under abuse, and over TLS with basic auth.
//!
//! - 500 idle connections and 200 clients that send a request head one byte every few
//!   seconds, under an open-files limit of 256: `/healthz` still answers within a second
//!   and `/metrics` is complete — with the default connection cap (idle connections make
//!   room) and with a cap above the limit (accept(2) fails with EMFILE and is survived).
//! - An endless header line: refused (431 or the connection closed) without memory growth.
//! - A real Prometheus scrapes over TLS with basic auth (certificates made by `openssl` in
//!   a temporary folder); a wrong password gives 401 and the target shows down.
//! - The example web configs in docs/ pass `promtool check web-config` and our loader.
//!
//! Every process is the test's own (stopped by its pid), every file in a temporary folder,
//! every port chosen by the kernel.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The open-files limit of this test process, raised to its hard limit: the clients
/// below hold 700 sockets.
fn raise_own_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
    }
    rl.rlim_cur
}

/// The exporter process; killed when dropped.
struct Exporter {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _home: tempfile::TempDir,
}

impl Exporter {
    /// `serve` on the harness (native backend) with `args`; `nofile` sets its open-files
    /// limit (soft and hard) before it starts.
    fn start(args: &[&str], nofile: Option<u64>) -> Exporter {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = tool_process(home.path());
        cmd.args([
            "-c",
            harness_uri(),
            "--backend",
            "native",
            "--probe-timeout",
            "3",
        ])
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "2"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let (child, addr, log) = spawn_serve(&mut cmd);
        Exporter {
            child,
            addr,
            log,
            _home: home,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait for `/healthz` to answer 200 over plain HTTP.
    fn wait_healthy(&self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if let Ok((200, _, _)) = try_get(self.addr, "/healthz", None, Duration::from_secs(5)) {
                return;
            }
            assert!(
                Instant::now() < end,
                "never healthy; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The abusers: idle sockets, and slow heads that get one more byte every 2 s from a
/// thread of their own until dropped.
struct Abuse {
    idle: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
    trickler: Option<std::thread::JoinHandle<usize>>,
}

impl Abuse {
    fn start(addr: SocketAddr, idle: usize, slow: usize) -> Abuse {
        let connect = || {
            // The kernel completes the handshake from its accept queue whether or not
            // the exporter has accepted yet.
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        };
        let idle: Vec<TcpStream> = (0..idle).map(|_| connect()).collect();
        let mut slow_socks: Vec<TcpStream> = (0..slow)
            .map(|_| {
                let mut s = connect();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let trickler = std::thread::spawn(move || {
            let mut bytes = 0;
            while !flag.load(Ordering::SeqCst) {
                for s in &mut slow_socks {
                    if s.write(b"a").is_ok() {
                        bytes += 1;
                    }
                }
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until && !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            bytes
        });
        Abuse {
            idle,
            stop,
            trickler: Some(trickler),
        }
    }
}

impl Drop for Abuse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.trickler.take() {
            let _ = t.join();
        }
        self.idle.clear();
    }
}

/// With 700 abusers holding (or queueing for) sockets: `/healthz` answers 200 within a
/// second, five times over, and `/metrics` is whole. Returns the worst `/healthz` time.
fn still_answers(e: &Exporter, what: &str) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let r = try_get(e.addr, "/healthz", None, Duration::from_secs(5));
        let took = t.elapsed();
        worst = worst.max(took);
        let (st, _, body) = r
            .unwrap_or_else(|err| panic!("{what}: /healthz failed: {err}; log:\n{}", e.log_text()));
        assert_eq!((st, body.as_str()), (200, "ok\n"), "{what}");
        assert!(
            took < Duration::from_secs(1),
            "{what}: /healthz took {took:?}; log:\n{}",
            e.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    let (st, head, body) = try_get(
        e.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|err| panic!("{what}: /metrics failed: {err}"));
    let scrape = t.elapsed();
    assert_eq!(st, 200, "{what}: {head}");
    assert!(body.ends_with("# EOF\n"), "{what}: cut short:\n{body}");
    assert!(body.contains("\nlibvirt_up 1\n"), "{what}:\n{body}");
    assert!(
        body.contains(&format!("libvirt_domain_info{{domain=\"{UBUNTU}\"")),
        "{what}:\n{body}"
    );
    eprintln!("{what}: /healthz worst {worst:?}, /metrics {scrape:?}");
    worst
}

#[test]
fn idle_and_slow_clients_never_deafen_it_under_a_low_open_files_limit() {
    if !harness_available() {
        return;
    }
    let own = raise_own_nofile();
    assert!(own >= 1024, "this test needs 1024 open files, has {own}");
    let t0 = Instant::now();

    // The default cap: a quarter of 256 open files; idle connections make room.
    let e = Exporter::start(&[], Some(256));
    assert!(
        e.log_text().contains("max_connections=64"),
        "{}",
        e.log_text()
    );
    e.wait_healthy(Duration::from_secs(30));
    let abuse = Abuse::start(e.addr, 500, 200);
    std::thread::sleep(Duration::from_secs(1));
    still_answers(&e, "at the connection cap");
    // The slow heads keep trickling for a while; the exporter stays responsive.
    std::thread::sleep(Duration::from_secs(3));
    still_answers(&e, "at the connection cap, later");
    drop(abuse);
    drop(e);

    // A cap above what 256 open files allow: accept(2) fails with EMFILE, which is
    // logged once and survived.
    let e = Exporter::start(&["--web.max-connections", "5000"], Some(256));
    e.wait_healthy(Duration::from_secs(30));
    let abuse = Abuse::start(e.addr, 500, 200);
    std::thread::sleep(Duration::from_secs(1));
    still_answers(&e, "out of file descriptors");
    std::thread::sleep(Duration::from_secs(3));
    still_answers(&e, "out of file descriptors, later");
    drop(abuse);
    // Once the abusers are gone (and accept(2) has worked for 5 s), it says so once.
    let end = Instant::now() + Duration::from_secs(15);
    while !e.log_text().contains("accepting connections again") && Instant::now() < end {
        let _ = try_get(e.addr, "/healthz", None, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = e.log_text();
    let failures = log.matches("accepting a connection failed").count();
    assert_eq!(failures, 1, "logged once per episode:\n{log}");
    assert!(log.contains("Too many open files"), "{log}");
    assert_eq!(
        log.matches("accepting connections again").count(),
        1,
        "{log}"
    );
    eprintln!("700 abusers, two exporters: {:?}", t0.elapsed());
}

#[test]
fn an_endless_header_line_is_refused_without_memory_growth() {
    if !harness_available() {
        return;
    }
    let e = Exporter::start(&[], None);
    e.wait_healthy(Duration::from_secs(30));
    // Warm up the allocator with ordinary scrapes first.
    for _ in 0..20 {
        let _ = try_get(e.addr, "/metrics", None, Duration::from_secs(5));
    }
    let before = rss_kib(e.pid());
    let chunk = vec![b'a'; 64 << 10];
    let (mut sent, mut connections, mut refused_431) = (0usize, 0, 0);
    let t0 = Instant::now();
    while sent < 50 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "50 MB took too long"
        );
        connections += 1;
        let mut s = TcpStream::connect(e.addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            .unwrap();
        // Write until the exporter hangs up on us.
        while let Ok(n) = s.write(&chunk) {
            sent += n;
            if sent >= 50 << 20 {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        if answer.starts_with(b"HTTP/1.1 431") {
            refused_431 += 1;
        }
    }
    // Memory is given back to the allocator, not necessarily to the kernel at once.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(e.pid());
    eprintln!(
        "endless header: {} MB over {connections} connections ({refused_431} answered 431) in {:?}; RSS {before} KiB -> {after} KiB",
        sent >> 20,
        t0.elapsed()
    );
    assert!(connections > 1, "one connection swallowed 50 MB");
    assert!(
        after < before + 4096,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // And it still answers.
    let (st, _, _) = try_get(e.addr, "/healthz", None, Duration::from_secs(2)).unwrap();
    assert_eq!(st, 200);
}

// ---------------------------------------------------------------------------------------
// TLS and basic auth.

/// `scrape-secret` as htpasswd writes it (`$2y$`, cost 10; made by Python's bcrypt).
const SCRAPE_SECRET_HASH: &str = "$2y$10$H09MsEGHHc2BAyVAv09VMe1BssN7Y1/CZZERvK5Pi80EdKlC9/bPW";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost, signed by it,
/// plus a client CA: `ca.crt`, `server.crt`, `server.key`, `clients-ca.crt` in `dir`.
fn make_certs(dir: &Path) {
    let d = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=diq test CA"])
        .arg("-keyout")
        .arg(d("ca.key"))
        .arg("-out")
        .arg(d("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(d("server.key"))
        .arg("-out")
        .arg(d("server.csr")));
    std::fs::write(
        d("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(d("server.csr"))
        .arg("-CA")
        .arg(d("ca.crt"))
        .arg("-CAkey")
        .arg(d("ca.key"))
        .arg("-extfile")
        .arg(d("ext.cnf"))
        .arg("-out")
        .arg(d("server.crt")));
    std::fs::copy(d("ca.crt"), d("clients-ca.crt")).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl over TLS with our CA: (status, headers).
fn curl(url: &str, ca: &Path, user: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5"])
        .arg("--cacert")
        .arg(ca);
    if let Some(u) = user {
        c.args(["-u", u]);
    }
    let out = c.arg(url).output().unwrap();
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
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

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_over_tls_with_basic_auth() {
    if !harness_available() || !needs("prometheus") || !needs("openssl") || !needs("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {SCRAPE_SECRET_HASH}\n"
        ),
    )
    .unwrap();
    let web_arg = web.display().to_string();
    let e = Exporter::start(&["--web.config.file", &web_arg], None);
    assert!(
        e.log_text().contains("listening on https://"),
        "{}",
        e.log_text()
    );
    let base = format!("https://{}", e.addr);
    let ca = d.join("ca.crt");

    // Direct requests: no credentials and a wrong password get 401 with the challenge.
    let (st, head) = curl(&format!("{base}/metrics"), &ca, None);
    assert_eq!(st, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    let (st, _) = curl(&format!("{base}/metrics"), &ca, Some("prometheus:wrong"));
    assert_eq!(st, 401);
    let (st, _) = curl(
        &format!("{base}/metrics"),
        &ca,
        Some("nobody:scrape-secret"),
    );
    assert_eq!(st, 401);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, _) = curl(
            &format!("{base}/healthz"),
            &ca,
            Some("prometheus:scrape-secret"),
        );
        if st == 200 {
            break;
        }
        assert!(Instant::now() < end, "healthz {st}; log:\n{}", e.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    // Plain HTTP on the TLS port gets no metrics.
    let plain = try_get(e.addr, "/metrics", None, Duration::from_secs(3));
    assert!(
        !matches!(plain, Ok((200, _, _))),
        "plain HTTP was served: {plain:?}"
    );

    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: ['{}']\n",
            ca.display(),
            e.addr
        )
    };
    let config = d.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
            job("diq-tls", "scrape-secret"),
            job("diq-wrong", "not-the-password")
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get_json = |path: &str| -> Option<serde_json::Value> {
        let (st, _, body) = try_get(api, path, None, Duration::from_secs(5)).ok()?;
        (st == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let end = Instant::now() + Duration::from_secs(60);
    let (good, wrong) = loop {
        if let Some(v) = get_json("/api/v1/targets") {
            let targets = v["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let find = |job: &str| {
                targets
                    .iter()
                    .find(|t| t["labels"]["job"] == job)
                    .cloned()
                    .unwrap_or_default()
            };
            let (g, w) = (find("diq-tls"), find("diq-wrong"));
            if g["health"] == "up" && w["health"] == "down" {
                break (g, w);
            }
        }
        assert!(
            Instant::now() < end,
            "targets never settled; Prometheus log: {}\nexporter log:\n{}",
            std::fs::read_to_string(d.join("prometheus.log")).unwrap_or_default(),
            e.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(good["scrapeUrl"], format!("https://{}/metrics", e.addr));
    let why = wrong["lastError"].as_str().unwrap_or("");
    assert!(why.contains("401"), "{why}");
    // The scraped series arrived through TLS.
    let q = format!(
        "/api/v1/query?query={}",
        percent_encode("libvirt_domain_info{job=\"diq-tls\",domain=\"diq-ubuntu\"}")
    );
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let n = get_json(&q)
            .and_then(|v| v["data"]["result"].as_array().map(Vec::len))
            .unwrap_or(0);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < end, "no diq-ubuntu series from diq-tls");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_bad_web_config_is_one_line_and_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let web = home.path().join("web.yml");
    std::fs::write(&web, "tls_server_config:\n  cert_fil: x.crt\n").unwrap();
    let out = tool(home.path())
        .args(["-c", "test:///default", "serve", "--listen", "127.0.0.1:0"])
        .arg("--web.config.file")
        .arg(&web)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cert_fil"), "{err}");
    assert!(err.contains("web.yml"), "{err}");

    // The config file's key, relative to the config file.
    std::fs::write(&web, "basic_auth_users:\n  prometheus: not-a-hash\n").unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(&config, "web_config_file = \"web.yml\"\n").unwrap();
    let out = tool(home.path())
        .args(["-c", "test:///default", "--config"])
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("not a bcrypt hash"), "{err}");
}

/// The example web configs of docs/, with certificates of the test's own beside them.
fn examples() -> Vec<PathBuf> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("web-config") && n.ends_with(".yml"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_example_web_configs_pass_promtool_and_our_loader() {
    if !needs("promtool") || !needs("openssl") {
        return;
    }
    let list = examples();
    assert!(list.len() >= 2, "{list:?}");
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    for example in list {
        let name = example.file_name().unwrap();
        let copy = dir.path().join(name);
        std::fs::copy(&example, &copy).unwrap();
        let out = Command::new("promtool")
            .args(["check", "web-config"])
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check web-config {}: {}{}",
            example.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = dismount_iso_qemu::serve::web_config::load(&copy)
            .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
        assert!(c.tls.is_some(), "{}: no TLS", example.display());
    }
}
