//! A typed QEMU guest agent client on top of the port's one raw agent call.
//!
//! Requests are built with serde (never by pasting strings) and replies are decoded into
//! small structs; every guest-supplied string stays untrusted data for the caller.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::hypervisor::{HvError, HvResult, Hypervisor};

/// What `guest-get-osinfo` returns (all members optional in the QGA schema).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OsInfo {
    pub id: Option<String>,
    pub name: Option<String>,
    pub pretty_name: Option<String>,
    pub version: Option<String>,
    pub version_id: Option<String>,
    pub kernel_release: Option<String>,
    pub kernel_version: Option<String>,
    pub machine: Option<String>,
    pub variant: Option<String>,
    pub variant_id: Option<String>,
}

/// One entry of `guest-info`'s command list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentCommandInfo {
    pub name: String,
    pub enabled: bool,
}

/// What `guest-info` returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    #[serde(rename = "supported_commands")]
    pub commands: Vec<AgentCommandInfo>,
}

impl AgentInfo {
    /// `Some(true)` enabled, `Some(false)` disabled by the guest's allow/block list,
    /// `None` unknown to this agent version.
    pub fn is_enabled(&self, command: &str) -> Option<bool> {
        self.commands
            .iter()
            .find(|c| c.name == command)
            .map(|c| c.enabled)
    }

    /// The one answer to "may we run `command`?": only when the agent lists it as
    /// enabled. A command it does not list is one this agent version cannot run.
    pub fn allows(&self, command: &str) -> bool {
        self.is_enabled(command) == Some(true)
    }

    /// Whether programs can be run in the guest (guest-exec and its status poll).
    pub fn can_exec(&self) -> bool {
        self.allows("guest-exec") && self.allows("guest-exec-status")
    }

    /// The commands of `needed` this agent does not allow, in order.
    pub fn refused(&self, needed: &[&str]) -> Vec<String> {
        needed
            .iter()
            .filter(|c| !self.allows(c))
            .map(|c| c.to_string())
            .collect()
    }
}

/// One disk under a mounted file system, as `guest-get-fsinfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FsDisk {
    /// `sata`, `scsi`, `ide`, `virtio`, … (QGA's `bus-type`).
    #[serde(rename = "bus-type")]
    pub bus_type: String,
    #[serde(default)]
    pub bus: u32,
    #[serde(default)]
    pub target: u32,
    #[serde(default)]
    pub unit: u32,
    /// The device node (`/dev/sr0`), when the guest names it.
    pub dev: Option<String>,
}

/// One mounted file system of the guest (`guest-get-fsinfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Filesystem {
    /// The kernel's name of the device (`sr0`, `vda1`, a Windows volume GUID).
    pub name: String,
    pub mountpoint: String,
    #[serde(rename = "type")]
    pub fs_type: String,
    #[serde(default, rename = "disk")]
    pub disks: Vec<FsDisk>,
}

/// The finished result of a `guest-exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none()
    }
}

#[derive(Deserialize)]
struct ExecStatus {
    exited: bool,
    exitcode: Option<i64>,
    signal: Option<i64>,
    #[serde(rename = "out-data")]
    out_data: Option<String>,
    #[serde(rename = "err-data")]
    err_data: Option<String>,
}

/// A guest agent of one domain, with the per-call timeout handed to libvirt.
pub struct Agent<'a> {
    hv: &'a dyn Hypervisor,
    domain: &'a str,
    timeout: Duration,
}

fn decode<T: for<'de> Deserialize<'de>>(domain: &str, command: &str, v: Value) -> HvResult<T> {
    serde_json::from_value(v).map_err(|e| HvError::AgentCommandFailed {
        domain: domain.to_string(),
        command: command.to_string(),
        message: format!("unexpected reply: {e}"),
    })
}

fn b64(domain: &str, command: &str, s: &str) -> HvResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| HvError::AgentCommandFailed {
            domain: domain.to_string(),
            command: command.to_string(),
            message: format!("reply is not valid base64: {e}"),
        })
}

impl<'a> Agent<'a> {
    pub fn new(hv: &'a dyn Hypervisor, domain: &'a str, timeout: Duration) -> Agent<'a> {
        Agent {
            hv,
            domain,
            timeout,
        }
    }

    pub fn domain(&self) -> &str {
        self.domain
    }

    /// The same agent with another per-call timeout.
    /// What libvirt may wait for one call of this agent.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn with_timeout(&self, timeout: Duration) -> Agent<'a> {
        Agent {
            hv: self.hv,
            domain: self.domain,
            timeout,
        }
    }

    fn call(&self, execute: &str, arguments: Option<Value>) -> HvResult<Value> {
        let request = match arguments {
            Some(a) => json!({ "execute": execute, "arguments": a }),
            None => json!({ "execute": execute }),
        };
        self.hv.agent_command(self.domain, &request, self.timeout)
    }

    pub fn ping(&self) -> HvResult<()> {
        self.call("guest-ping", None).map(|_| ())
    }

    pub fn info(&self) -> HvResult<AgentInfo> {
        let v = self.call("guest-info", None)?;
        decode(self.domain, "guest-info", v)
    }

    pub fn osinfo(&self) -> HvResult<OsInfo> {
        let v = self.call("guest-get-osinfo", None)?;
        decode(self.domain, "guest-get-osinfo", v)
    }

    /// Start a process (argument vector, no shell) and return its PID.
    pub fn exec_start(&self, path: &str, args: &[&str]) -> HvResult<i64> {
        let v = self.call(
            "guest-exec",
            Some(json!({ "path": path, "arg": args, "capture-output": true })),
        )?;
        v.get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| HvError::AgentCommandFailed {
                domain: self.domain.to_string(),
                command: "guest-exec".to_string(),
                message: "reply has no pid".to_string(),
            })
    }

    /// Poll `guest-exec-status` until the process exits or `deadline` passes. The agent
    /// forgets a process after its first `exited: true` reply, so that reply is the one
    /// we keep.
    pub fn exec_wait(&self, pid: i64, program: &str, deadline: Instant) -> HvResult<ExecOutput> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let v = self.call("guest-exec-status", Some(json!({ "pid": pid })))?;
            let st: ExecStatus = decode(self.domain, "guest-exec-status", v)?;
            if st.exited {
                let stdout = match st.out_data {
                    Some(s) => b64(self.domain, "guest-exec-status", &s)?,
                    None => Vec::new(),
                };
                let stderr = match st.err_data {
                    Some(s) => b64(self.domain, "guest-exec-status", &s)?,
                    None => Vec::new(),
                };
                return Ok(ExecOutput {
                    exit_code: st.exitcode,
                    signal: st.signal,
                    stdout,
                    stderr,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                // The agent answered every poll: it is the program that did not end.
                return Err(HvError::ExecUnfinished {
                    domain: self.domain.to_string(),
                    program: program.to_string(),
                    seconds: started.elapsed().as_secs_f64().round() as u64,
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Run a program to completion within `deadline`.
    pub fn exec(&self, path: &str, args: &[&str], deadline: Instant) -> HvResult<ExecOutput> {
        let pid = self.exec_start(path, args)?;
        self.exec_wait(pid, path, deadline)
    }

    /// Open a guest file; `mode` as fopen ("r", "w", "a"...). Returns the handle.
    pub fn file_open(&self, path: &str, mode: &str) -> HvResult<i64> {
        let v = self.call(
            "guest-file-open",
            Some(json!({ "path": path, "mode": mode })),
        )?;
        v.as_i64().ok_or_else(|| HvError::AgentCommandFailed {
            domain: self.domain.to_string(),
            command: "guest-file-open".to_string(),
            message: "reply is not a handle".to_string(),
        })
    }

    /// Read up to `count` bytes; returns the bytes and whether end of file was reached.
    /// A reply whose `count` disagrees with the data it carries, or with more data than
    /// asked for, is an error: the guest is lying or broken.
    pub fn file_read(&self, handle: i64, count: usize) -> HvResult<(Vec<u8>, bool)> {
        #[derive(Deserialize)]
        struct Read {
            count: usize,
            #[serde(rename = "buf-b64")]
            buf: String,
            eof: bool,
        }
        let v = self.call(
            "guest-file-read",
            Some(json!({ "handle": handle, "count": count })),
        )?;
        let r: Read = decode(self.domain, "guest-file-read", v)?;
        let data = b64(self.domain, "guest-file-read", &r.buf)?;
        if r.count != data.len() || data.len() > count {
            return Err(HvError::AgentCommandFailed {
                domain: self.domain.to_string(),
                command: "guest-file-read".to_string(),
                message: format!(
                    "the reply says {} bytes but carries {} (asked for at most {count}): refused",
                    r.count,
                    data.len()
                ),
            });
        }
        Ok((data, r.eof))
    }

    /// Write all of `data`; returns the count the agent reports written.
    pub fn file_write(&self, handle: i64, data: &[u8]) -> HvResult<usize> {
        #[derive(Deserialize)]
        struct Written {
            count: usize,
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        let v = self.call(
            "guest-file-write",
            Some(json!({ "handle": handle, "buf-b64": encoded })),
        )?;
        let w: Written = decode(self.domain, "guest-file-write", v)?;
        Ok(w.count)
    }

    /// Move the file position (`whence`: "set", "cur" or "end"); returns the new position.
    /// Seeking to the end with offset 0 is how a size is learned without guest-exec.
    pub fn file_seek(&self, handle: i64, offset: i64, whence: &str) -> HvResult<u64> {
        #[derive(Deserialize)]
        struct Seeked {
            position: u64,
        }
        let v = self.call(
            "guest-file-seek",
            Some(json!({ "handle": handle, "offset": offset, "whence": whence })),
        )?;
        let s: Seeked = decode(self.domain, "guest-file-seek", v)?;
        Ok(s.position)
    }

    pub fn file_flush(&self, handle: i64) -> HvResult<()> {
        self.call("guest-file-flush", Some(json!({ "handle": handle })))
            .map(|_| ())
    }

    pub fn file_close(&self, handle: i64) -> HvResult<()> {
        self.call("guest-file-close", Some(json!({ "handle": handle })))
            .map(|_| ())
    }

    /// File systems the guest has mounted (`guest-get-fsinfo`). An entry the agent
    /// got wrong (missing members) is skipped, not fatal: the rest is still true.
    pub fn fsinfo(&self) -> HvResult<Vec<Filesystem>> {
        let v = self.call("guest-get-fsinfo", None)?;
        let Value::Array(items) = v else {
            return Err(HvError::AgentCommandFailed {
                domain: self.domain.to_string(),
                command: "guest-get-fsinfo".to_string(),
                message: "reply is not a list".to_string(),
            });
        };
        Ok(items
            .into_iter()
            .filter_map(|i| serde_json::from_value(i).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
    use crate::hypervisor::DomainState;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn decodes_osinfo_with_missing_members() {
        let hv = FakeHypervisor::new().with_domain(
            FakeDomain::new("vm", DomainState::Running).with_agent(|_, req| {
                assert_eq!(req["execute"], "guest-get-osinfo");
                Ok(json!({"id": "mswindows", "pretty-name": "Windows 10 Pro", "kernel-release": "22631"}))
            }),
        );
        let info = Agent::new(&hv, "vm", Duration::from_secs(1))
            .osinfo()
            .unwrap();
        assert_eq!(info.id.as_deref(), Some("mswindows"));
        assert_eq!(info.kernel_release.as_deref(), Some("22631"));
        assert_eq!(info.name, None);
    }

    #[test]
    fn exec_keeps_the_first_exited_reply() {
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let hv = FakeHypervisor::new().with_domain(
            FakeDomain::new("vm", DomainState::Running).with_agent(move |_, req| {
                match req["execute"].as_str().unwrap() {
                    "guest-exec" => {
                        assert_eq!(req["arguments"]["path"], "/bin/cat");
                        assert_eq!(req["arguments"]["arg"][0], "/etc/os-release");
                        Ok(json!({"pid": 42}))
                    }
                    "guest-exec-status" => match p.fetch_add(1, Ordering::SeqCst) {
                        0 => Ok(json!({"exited": false})),
                        // The agent forgets the process after this reply.
                        1 => Ok(json!({"exited": true, "exitcode": 0, "out-data": "SUQ9eAo="})),
                        _ => Err(HvError::AgentCommandFailed {
                            domain: "vm".into(),
                            command: "guest-exec-status".into(),
                            message: "Invalid parameter 'pid'".into(),
                        }),
                    },
                    other => panic!("unexpected {other}"),
                }
            }),
        );
        let out = Agent::new(&hv, "vm", Duration::from_secs(1))
            .exec(
                "/bin/cat",
                &["/etc/os-release"],
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, b"ID=x\n");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn exec_gives_up_at_the_deadline() {
        let hv = FakeHypervisor::new().with_domain(
            FakeDomain::new("vm", DomainState::Running).with_agent(|_, req| {
                match req["execute"].as_str().unwrap() {
                    "guest-exec" => Ok(json!({"pid": 1})),
                    _ => Ok(json!({"exited": false})),
                }
            }),
        );
        let start = Instant::now();
        let err = Agent::new(&hv, "vm", Duration::from_secs(1))
            .exec("/bin/sleep", &["100"], start + Duration::from_millis(150))
            .unwrap_err();
        assert!(
            matches!(&err, HvError::ExecUnfinished { program, .. } if program == "/bin/sleep"),
            "{err:?}"
        );
        assert!(err.to_string().contains("did not finish within"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn info_reports_disabled_commands() {
        let hv = FakeHypervisor::new().with_domain(
            FakeDomain::new("vm", DomainState::Running).with_agent(|_, _| {
                Ok(json!({"version": "7.2.0", "supported_commands": [
                    {"name": "guest-exec", "enabled": false, "success-response": true},
                    {"name": "guest-get-osinfo", "enabled": true, "success-response": true}
                ]}))
            }),
        );
        let info = Agent::new(&hv, "vm", Duration::from_secs(1))
            .info()
            .unwrap();
        assert_eq!(info.is_enabled("guest-exec"), Some(false));
        assert_eq!(info.is_enabled("guest-get-osinfo"), Some(true));
        assert_eq!(info.is_enabled("guest-nope"), None);
        assert!(info.allows("guest-get-osinfo"));
        assert!(!info.allows("guest-exec"));
        assert!(!info.allows("guest-nope"), "an unknown command cannot run");
        assert!(!info.can_exec());
        assert_eq!(
            info.refused(&["guest-get-osinfo", "guest-exec", "guest-nope"]),
            vec!["guest-exec", "guest-nope"]
        );
    }

    #[test]
    fn fsinfo_becomes_typed_and_skips_broken_entries() {
        let hv = FakeHypervisor::new().with_domain(
            FakeDomain::new("vm", DomainState::Running).with_agent(|_, _| {
                Ok(json!([
                    {"name":"sr0","total-bytes":376832,"mountpoint":"/mnt/my disc","type":"iso9660",
                     "disk":[{"bus-type":"sata","bus":0,"unit":1,"target":0,"dev":"/dev/sr0",
                              "pci-controller":{"bus":0,"slot":31,"domain":0,"function":2}}]},
                    {"name":"broken"},
                    {"name":"vda1","mountpoint":"/","type":"ext4","disk":[]}
                ]))
            }),
        );
        let fs = Agent::new(&hv, "vm", Duration::from_secs(1))
            .fsinfo()
            .unwrap();
        assert_eq!(fs.len(), 2);
        assert_eq!(fs[0].mountpoint, "/mnt/my disc");
        assert_eq!(fs[0].disks[0].bus_type, "sata");
        assert_eq!(fs[0].disks[0].unit, 1);
        assert_eq!(fs[0].disks[0].dev.as_deref(), Some("/dev/sr0"));
        assert!(fs[1].disks.is_empty());
    }
}
