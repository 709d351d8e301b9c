//! The hostile guest (`diq-hostile`): its agent is diq-hostile-agent (tools/hostile-agent),
//! which speaks QGA over the real virtio-serial channel and lies as told. Tests switch
//! what it lies about with [`set_mode`]; every mode is listed in scripts/harness.sh's
//! header and tools/hostile-agent/src/main.rs. `scripts/harness.sh up` leaves it honest.
//!
//! Tests that switch it share one guest: hold [`super::serial`] (or a lock of the test
//! file's own) while a mode is set, and switch back to "honest" when done.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The guest whose agent lies.
pub const HOSTILE: &str = "diq-hostile";

/// Where `scripts/harness.sh` keeps everything by default.
const DEFAULT_HARNESS_DIR: &str = "/var/lib/dismount-iso-qemu-harness";

/// How long a switch may take: after a reply libvirt rejected (bad-json) the agent
/// reopens its port and answers once libvirt is attached again (about 2-5 s).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The host side of the agent's control channel: `$HARNESS_DIR/run/agent/
/// diq-hostile.control.sock` (`HARNESS_DIR` from `scripts/harness.sh env`, else the
/// default place).
pub fn control_socket() -> PathBuf {
    let dir = std::env::var_os("HARNESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_HARNESS_DIR));
    dir.join("run/agent")
        .join(format!("{HOSTILE}.control.sock"))
}

/// Send one control line and return the agent's answer line (without the newline).
fn control(line: &str) -> Result<String, String> {
    let path = control_socket();
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut s = UnixStream::connect(&path).map_err(fail)?;
    s.set_write_timeout(Some(ACK_TIMEOUT)).map_err(fail)?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer within {} s (is diq-hostile running? scripts/harness.sh status)",
                ACK_TIMEOUT.as_secs()
            ));
        }
        s.set_read_timeout(Some(left)).map_err(fail)?;
        match s.read(&mut buf) {
            Ok(0) => return Err("the control socket closed before the answer".to_string()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// Switch the hostile agent to `mode` ("honest", "escapes", "endless-read",
/// "count-lies [more|less]", "exec-never-exits", "many-mounts [N]", "slow SECONDS",
/// "bad-json [syntax|utf8|truncated|not-object|unknown]", "windows [no-osinfo]") and
/// wait for its "ok"; panics with the reason when it does not come.
pub fn set_mode(mode: &str) {
    match control(mode) {
        Ok(answer) if answer.starts_with("ok ") => {}
        Ok(answer) => panic!("diq-hostile-agent refused mode {mode:?}: {answer:?}"),
        Err(e) => panic!(
            "cannot switch diq-hostile-agent to {mode:?} over {}: {e} (run scripts/harness.sh up as root)",
            control_socket().display()
        ),
    }
}

/// The mode the hostile agent is in, as it prints it ("honest", "slow 4.5"…).
pub fn mode() -> String {
    match control("status") {
        Ok(answer) => match answer.strip_prefix("ok ") {
            Some(m) => m.to_string(),
            None => panic!("diq-hostile-agent answered status with {answer:?}"),
        },
        Err(e) => panic!(
            "cannot ask diq-hostile-agent its mode over {}: {e}",
            control_socket().display()
        ),
    }
}
