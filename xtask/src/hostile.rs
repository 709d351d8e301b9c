//! The control channel of the hostile guest's agent (diq-hostile-agent, in
//! tools/hostile-agent): one line out ("honest", "slow 4", "status"…), one line back
//! ("ok MODE" or "error TEXT"). `up` uses it to leave the guest honest, `status` and
//! `selftest` to say which mode it is in.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::guests::control_socket;

/// Send `line` to the agent of guest `name`; its answer after "ok ", or why there is none.
pub fn control(dir: &Path, name: &str, line: &str, timeout: Duration) -> Result<String, String> {
    let path = control_socket(dir, name);
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut s = UnixStream::connect(&path).map_err(fail)?;
    s.set_write_timeout(Some(timeout)).map_err(fail)?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
    let deadline = Instant::now() + timeout;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{}: no answer to {line:?} within {} s",
                path.display(),
                timeout.as_secs()
            ));
        }
        s.set_read_timeout(Some(left)).map_err(fail)?;
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("{}: closed before answering", path.display())),
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
    let text = text.lines().next().unwrap_or_default().trim();
    text.strip_prefix("ok ")
        .map(str::to_string)
        .ok_or_else(|| format!("the agent answered {line:?} with {text:?}"))
}
