//! Talking to the harness's guests without the code under test: raw guest agent calls
//! through `virsh`, files and commands in the guest, scratch directories.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::harness_uri;

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// One raw agent call through virsh: independent of the code under test.
pub fn qga(vm: &str, cmd: &Value) -> Value {
    let out = std::process::Command::new("virsh")
        .env("LC_ALL", "C")
        .args([
            "-c",
            harness_uri(),
            "qemu-agent-command",
            vm,
            &cmd.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh qemu-agent-command {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["return"].clone()
}

/// Run a shell command in the guest; (exit code, stdout).
pub fn guest_sh(vm: &str, script: &str) -> (i64, Vec<u8>) {
    let pid = qga(
        vm,
        &json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}}),
    )["pid"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = qga(
            vm,
            &json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
        );
        if st["exited"] == true {
            let out = st["out-data"].as_str().map(unb64).unwrap_or_default();
            return (st["exitcode"].as_i64().unwrap_or(-1), out);
        }
        assert!(Instant::now() < deadline, "guest command {script:?} hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn guest_text(vm: &str, script: &str) -> String {
    let (code, out) = guest_sh(vm, script);
    assert_eq!(code, 0, "{script}");
    String::from_utf8(out).unwrap().trim().to_string()
}

/// Write a small guest file through guest-file-* directly.
pub fn guest_put(vm: &str, path: &str, data: &[u8]) {
    let h = qga(
        vm,
        &json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": "w"}}),
    );
    qga(
        vm,
        &json!({"execute": "guest-file-write", "arguments": {"handle": h, "buf-b64": b64(data)}}),
    );
    qga(
        vm,
        &json!({"execute": "guest-file-close", "arguments": {"handle": h}}),
    );
}

/// Read a small guest file through guest-file-* directly.
pub fn guest_get(vm: &str, path: &str) -> Vec<u8> {
    let h = qga(
        vm,
        &json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}}),
    );
    let mut data = Vec::new();
    loop {
        let r = qga(
            vm,
            &json!({"execute": "guest-file-read", "arguments": {"handle": h, "count": 65536}}),
        );
        data.extend(unb64(r["buf-b64"].as_str().unwrap()));
        if r["eof"] == true {
            break;
        }
    }
    qga(
        vm,
        &json!({"execute": "guest-file-close", "arguments": {"handle": h}}),
    );
    data
}

/// Wait until the guest file no longer starts like `original`: an upload has begun.
pub fn wait_until_changed(vm: &str, path: &str, original: &[u8], limit: Duration) {
    let end = Instant::now() + limit;
    let head: Vec<String> = original[..16].iter().map(|b| format!("{b:02x}")).collect();
    while Instant::now() < end {
        let (code, out) = guest_sh(vm, &format!("head -c 16 '{path}' | od -An -tx1"));
        let now: Vec<String> = String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if code == 0 && now != head {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the upload to {vm}:{path} never began");
}

/// SHA-256 (hex) of a guest file, computed in the guest.
pub fn guest_sha(vm: &str, path: &str) -> String {
    guest_text(vm, &format!("sha256sum '{path}' | cut -c1-64"))
}

/// A fresh directory in the guest, removed on drop.
pub struct GuestDir {
    pub vm: &'static str,
    pub path: String,
}

impl GuestDir {
    pub fn new(vm: &'static str, tag: &str) -> GuestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = format!(
            "/tmp/diq-edit-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        guest_text(vm, &format!("mkdir -p '{path}'"));
        GuestDir { vm, path }
    }

    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }
}

impl Drop for GuestDir {
    fn drop(&mut self) {
        // Never panic here (a panic while unwinding aborts every test): best effort.
        let cmd = json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/rm", "arg": ["-rf", self.path]}});
        let _ = std::process::Command::new("virsh")
            .args([
                "-c",
                harness_uri(),
                "qemu-agent-command",
                self.vm,
                &cmd.to_string(),
            ])
            .output();
    }
}
