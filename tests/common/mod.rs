//! What the integration tests share, written once: the harness's address and guests, the
//! backends every end-to-end test runs on, the lock that keeps state-changing tests
//! apart, the tool's binary with one environment scrub, and the skip policy.
//!
//! Skip policy: a test whose real peer (the harness, virsh, tmux, promtool…) is missing
//! skips with a message that says how to get it — except with `CI=true`, where a skip
//! would hide a broken environment, so it fails.

#![allow(
    dead_code,
    reason = "each test binary uses a part of the shared helpers"
)]

pub mod child;
pub mod cut_proxy;
pub mod guest;
pub mod hostile;
pub mod prometheus;
pub mod scratch_vm;
pub mod sshd;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Both adapters: every end-to-end behaviour is proven on each.
pub const BACKENDS: [&str; 2] = ["native", "virsh"];

/// Where `scripts/harness.sh` puts its own libvirtd's socket by default.
const DEFAULT_HARNESS_SOCKET: &str = "/var/lib/dismount-iso-qemu-harness/run/libvirt/libvirt-sock";

/// The socket of the harness's own libvirtd (a session daemon of the harness user, never
/// the host's): `HARNESS_SOCKET` from `scripts/harness.sh env`, else the default place.
pub fn harness_socket() -> &'static str {
    static SOCKET: OnceLock<String> = OnceLock::new();
    SOCKET.get_or_init(|| {
        std::env::var("HARNESS_SOCKET").unwrap_or_else(|_| DEFAULT_HARNESS_SOCKET.to_string())
    })
}

/// The URI that reaches the harness's own libvirtd.
pub fn harness_uri() -> &'static str {
    static URI: OnceLock<String> = OnceLock::new();
    URI.get_or_init(|| format!("qemu+unix:///session?socket={}", harness_socket()))
}

/// Guests the harness defines (see scripts/harness.sh).
pub const UBUNTU: &str = "diq-ubuntu";
pub const CENTOS: &str = "diq-centos";
pub const DEBIAN_EXEC: &str = "diq-debian";
pub const NO_AGENT: &str = "diq-noagent";
pub const NO_EXEC: &str = "diq-noexec";
pub const FROZEN: &str = "diq-frozen";
pub const PAUSED: &str = "diq-paused";
pub const WIN_OFF: &str = "diq-win2k22";

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The skip policy: `true` when `present`; otherwise print how to get `what` and return
/// `false` — or, with `CI=true`, fail the test.
pub fn require(present: bool, what: &str, how: &str) -> bool {
    if present {
        return true;
    }
    if in_ci() {
        panic!("CI=true but {what} is missing: {how}");
    }
    eprintln!("skipping: {what} is missing ({how})");
    false
}

/// Whether a program is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `true` when the harness answers (see [`require`]).
pub fn harness_available() -> bool {
    let ok = Command::new("virsh")
        .args(["-c", harness_uri(), "domstate", UBUNTU])
        .env("LC_ALL", "C")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("running"))
        .unwrap_or(false);
    require(
        ok,
        "the e2e harness",
        "run `scripts/harness.sh up` as root, or `scripts/test-all.sh`",
    )
}

/// State-changing tests of one file run one at a time: they share the harness's guests
/// (and each call to the frozen guest holds a daemon worker for seconds).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The environment variables of the user's that would change what the tool does.
const SCRUBBED: &[&str] = &[
    "LIBVIRT_URI",
    "LIBVIRT_DEFAULT_URI",
    "VISUAL",
    "EDITOR",
    "DISMOUNT_ISO_QEMU_BACKEND",
    "DISMOUNT_ISO_QEMU_PROBE_TIMEOUT",
    "DISMOUNT_ISO_QEMU_AGENT_TIMEOUT",
    "DISMOUNT_ISO_QEMU_CONNECT_TIMEOUT",
    "DISMOUNT_ISO_QEMU_CACHE_TTL",
    "DISMOUNT_ISO_QEMU_DEFINITION_TTL",
    "DISMOUNT_ISO_QEMU_JOBS",
    "DISMOUNT_ISO_QEMU_CONFIG",
    "DISMOUNT_ISO_QEMU_MAX_SIZE",
    "DISMOUNT_ISO_QEMU_TRANSFER_TIMEOUT",
    "DISMOUNT_ISO_QEMU_MIN_RATE",
    "DISMOUNT_ISO_QEMU_LOG",
];

/// The tool's binary with a scrubbed environment: no URI, editor or setting of the
/// user's, and its cache, config and temporary files under `home`.
pub fn tool(home: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("dismount_iso_qemu").unwrap();
    for k in SCRUBBED {
        c.env_remove(k);
    }
    c.env("XDG_CACHE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("TMPDIR", home);
    c
}

/// [`tool`] as a plain process, for tests that keep it running (serve).
pub fn tool_process(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dismount_iso_qemu"));
    for k in SCRUBBED {
        c.env_remove(k);
    }
    c.env("XDG_CACHE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("TMPDIR", home);
    c
}

/// [`tool`] on the harness with one backend.
pub fn tool_on_harness(home: &Path, backend: &str) -> assert_cmd::Command {
    let mut c = tool(home);
    c.args(["-c", harness_uri(), "--backend", backend]);
    c
}

/// What [`spawn_serve`] gives back: the running `serve`, its address, and every line it
/// logged so far (kept filling by a reader thread).
pub type Served = (
    std::process::Child,
    std::net::SocketAddr,
    std::sync::Arc<Mutex<Vec<String>>>,
);

/// Start `serve` from `cmd` (stderr is piped here) and return once it logged the address
/// it listens on (`http://` or `https://`). Each line is stored before the address is
/// announced, so whoever wakes on the address finds the line in the log.
pub fn spawn_serve(cmd: &mut Command) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let log = std::sync::Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line.clone());
            for scheme in ["listening on http://", "listening on https://"] {
                if let Some(i) = line.find(scheme) {
                    let rest = &line[i + scheme.len()..];
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("serve logged no address: {:?}", log.lock().unwrap()));
    (child, addr.parse().unwrap(), log)
}

/// One HTTP/1.0 GET (so no chunked answers): status, content type, body.
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    try_http_get(addr, path, accept).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`] without panicking.
pub fn try_http_get(
    addr: std::net::SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let (status, head, body) = try_get(addr, path, accept, std::time::Duration::from_secs(10))?;
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, ctype, body))
}

/// One HTTP/1.0 GET on a fresh connection, every step bounded by `timeout`: status (0
/// when unreadable), head, body.
pub fn try_get(
    addr: std::net::SocketAddr,
    path: &str,
    accept: Option<&str>,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other(format!(
            "not an HTTP answer: {raw:?}"
        )));
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// The JSON document a command printed, after checking it exited 0 (`what` names it in
/// the failure, with its stderr).
pub fn ok_json(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}
