//! A remote host for the tests: `scripts/test-sshd.sh`'s sshd (the harness's user, a
//! loopback port, keys of its own, stopped and removed on drop), URIs that reach the
//! harness's libvirtd through it, and a TCP listener that accepts and never answers.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::{harness_socket, require};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-sshd.sh")
}

/// The running sshd; dropping it stops it and removes its folder.
pub struct TestSshd {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    /// The key sshd accepts.
    pub key: PathBuf,
    /// A key sshd refuses.
    pub other_key: PathBuf,
    /// An `ssh` (for the URI's `command=`) that knows the host key and reads no file of
    /// the user's (no ~/.ssh, no agent).
    pub ssh: PathBuf,
    /// The same with an empty known_hosts: the host key is unknown.
    pub ssh_unknown_host: PathBuf,
    /// The `unshare` process whose PID namespace holds sshd and its sessions.
    pub pid: u32,
}

impl TestSshd {
    /// Start one; `None` (or a failure with `CI=true`) when that cannot be done here.
    pub fn start() -> Option<TestSshd> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !require(
            root,
            "root (the test sshd runs as the harness's user)",
            "run the tests as root, e.g. scripts/test-all.sh",
        ) {
            return None;
        }
        let out = Command::new(script())
            .arg("start")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let ok = out.status.success();
        if !require(
            ok,
            "the test sshd",
            &format!(
                "scripts/test-sshd.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        ) {
            return None;
        }
        let facts = parse_env(&String::from_utf8_lossy(&out.stdout));
        let get = |k: &str| {
            facts
                .get(k)
                .cloned()
                .unwrap_or_else(|| panic!("test-sshd.sh printed no {k}: {facts:?}"))
        };
        Some(TestSshd {
            dir: get("SSHD_DIR").into(),
            port: get("SSHD_PORT").parse().unwrap(),
            user: get("SSHD_USER"),
            key: get("SSHD_KEY").into(),
            other_key: get("SSHD_OTHER_KEY").into(),
            ssh: get("SSHD_SSH").into(),
            ssh_unknown_host: get("SSHD_SSH_UNKNOWN").into(),
            pid: get("SSHD_PID").parse().unwrap(),
        })
    }

    /// `qemu+ssh://USER@127.0.0.1:PORT/session?…` reaching the harness's libvirtd:
    /// with `socket` its socket is named (libvirt runs `nc -U` on the remote side),
    /// without it virt-ssh-helper finds the session daemon there. No `no_tty`: the
    /// tool must add it.
    pub fn uri(&self, ssh: &Path, key: &Path, socket: bool) -> String {
        let mut uri = format!(
            "qemu+ssh://{}@127.0.0.1:{}/session?keyfile={}&command={}",
            self.user,
            self.port,
            key.display(),
            ssh.display()
        );
        if socket {
            uri.push_str(&format!("&socket={}", harness_socket()));
        }
        uri
    }

    /// The URI of the harness through this sshd, the way a user would write it.
    pub fn harness_uri(&self) -> String {
        self.uri(&self.ssh, &self.key, true)
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .status();
    }
}

/// `K=V` lines as `printf %q` wrote them (values here have no quotes, only `\ ` escapes).
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ").replace("\\", "")))
        .collect()
}

/// A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte: a
/// host that hangs. Connections stay open for as long as the listener lives.
pub struct SilentHost {
    pub addr: SocketAddr,
    pub accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentHost {
    pub fn start() -> SilentHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&accepted);
        // Not joined: it blocks in accept until the test process ends.
        std::thread::spawn(move || {
            for s in listener.incoming().map_while(Result::ok) {
                keep.lock().unwrap().push(s);
            }
        });
        SilentHost { addr, accepted }
    }

    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}
