//! `serve` on the harness and a real Prometheus server scraping it, for the tests that
//! query Prometheus rather than read `/metrics` themselves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{harness_uri, tool_process};

/// `serve` on the harness, listening on a free loopback port; killed when dropped.
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _home: tempfile::TempDir,
}

impl Serve {
    /// `dismount_iso_qemu -c HARNESS --backend BACKEND GLOBAL… serve --interval INTERVAL`;
    /// returns once it logged its address.
    pub fn start(backend: &str, global: &[&str], interval: u64) -> Serve {
        let home = tempfile::tempdir().unwrap();
        let (child, addr, log) = super::spawn_serve(
            tool_process(home.path())
                .args(["-c", harness_uri(), "--backend", backend])
                .args(global)
                .args(["serve", "--listen", "127.0.0.1:0", "--interval"])
                .arg(interval.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        );
        Serve {
            child,
            addr,
            log,
            _home: home,
        }
    }

    /// Wait for `/healthz` to answer 200 (its first scan done).
    pub fn wait_healthy(&self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/healthz") {
                return;
            }
            assert!(
                Instant::now() < end,
                "serve not healthy within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus server (`prometheus` on PATH) with its data in a temporary
/// directory, scraping `targets` as job `job`; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub api: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(job: &str, targets: &[SocketAddr], scrape_interval: Duration) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let every = format!("{}ms", scrape_interval.as_millis());
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(Self::log_path(&dir)).unwrap(),
            ))
            .spawn()
            .unwrap();
        Prometheus {
            child,
            api: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
        }
    }

    fn log_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("prometheus.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(Self::log_path(&self.dir)).unwrap_or_default()
    }

    /// An instant query at the current time: the result's series, or why there are none
    /// (not answering yet, an HTTP error, the API's error text for a bad query).
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(self.api, &path).map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {} {}",
                v["errorType"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Wait until `promql` returns at least one series (Prometheus up, the target
    /// scraped, enough samples); the series, or a failure with Prometheus's log.
    pub fn wait_for(&mut self, promql: &str, limit: Duration) -> Vec<serde_json::Value> {
        let end = Instant::now() + limit;
        loop {
            let last = match self.query(promql) {
                Ok(series) if !series.is_empty() => return series,
                Ok(_) => "no series".to_string(),
                Err(e) => e,
            };
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}); log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < end,
                "{promql:?} still gives {last} after {limit:?}; Prometheus log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET (so no chunked answer): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
