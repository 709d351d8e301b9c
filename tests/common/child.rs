//! The tool as a child process a test can signal, with its output captured, and the
//! data the fault tests move.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{harness_uri, tool_process};

/// `n` bytes of a pattern that differs with `seed`.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The tool on the harness as a child we can signal; stdout and stderr captured; its
/// state directory (recovery records) and system log socket inside `home`.
pub fn spawn(home: &Path, backend: &str, args: &[&str]) -> Child {
    tool_process(home)
        .args(["-c", harness_uri(), "--backend", backend])
        .args(args)
        .env("DISMOUNT_ISO_QEMU_STATE_DIR", home.join("state"))
        .env("DISMOUNT_ISO_QEMU_SYSLOG_SOCKET", home.join("log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for `child` (killed and a failure after `limit`): (exit code, stdout, stderr).
pub fn finish(mut child: Child, limit: Duration) -> (i32, String, String) {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), out, err);
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the tool did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

pub fn local_sha(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
