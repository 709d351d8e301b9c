//! Fixtures the media tests and the command tests share: domain XML with CD-ROM drives,
//! scripted guest agents, and a host of VMs in every media situation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::eject::EjectOptions;
use super::mount::{MountRequest, ScopeChoice};
use super::read_vm;
use crate::hypervisor::fake::{Call, FakeDomain, FakeHypervisor};
use crate::hypervisor::{ChangeScope, DomainInfo, DomainState, HvError, HvResult, Hypervisor};
use crate::snapshot::media::VmMedia;

/// One CD-ROM: (target, bus, source, unit).
pub(crate) type Cd<'a> = (&'a str, &'a str, Option<&'a str>, u32);

pub(crate) fn xml(name: &str, cds: &[Cd<'_>], controllers: &[&str]) -> String {
    let mut s = format!("<domain type='qemu'><name>{name}</name><devices>");
    s.push_str("<disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda' bus='virtio'/></disk>");
    for (t, bus, src, unit) in cds {
        s.push_str("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>");
        if let Some(src) = src {
            s.push_str(&format!(
                "<source file='{}'/>",
                crate::domxml::escape_attr(src).unwrap()
            ));
        }
        s.push_str(&format!(
            "<target dev='{t}' bus='{bus}'/><readonly/><address type='drive' controller='0' bus='0' target='0' unit='{unit}'/></disk>"
        ));
    }
    for c in controllers {
        s.push_str(&format!("<controller type='{c}' index='0'/>"));
    }
    s.push_str("</devices></domain>");
    s
}

pub(crate) fn opts(force: bool) -> EjectOptions {
    EjectOptions {
        force,
        agent_timeout: Duration::from_secs(1),
        umount_timeout: Duration::from_secs(2),
        max_unmounts: 8,
        guest_budget: Duration::from_secs(10),
        batch_budget: Duration::from_secs(60),
        jobs: 4,
    }
}

pub(crate) fn info(hv: &FakeHypervisor, name: &str) -> DomainInfo {
    hv.list_domains()
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap()
}

pub(crate) fn vm(hv: &FakeHypervisor, name: &str) -> VmMedia {
    read_vm(hv, &info(hv, name)).unwrap()
}

pub(crate) fn updates(hv: &FakeHypervisor) -> Vec<(String, String, ChangeScope, bool)> {
    hv.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::UpdateDevice {
                domain,
                xml,
                scope,
                force,
            } => Some((domain, xml, scope, force)),
            _ => None,
        })
        .collect()
}

pub(crate) fn attaches(hv: &FakeHypervisor) -> Vec<(String, String, ChangeScope)> {
    hv.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::AttachDevice { domain, xml, scope } => Some((domain, xml, scope)),
            _ => None,
        })
        .collect()
}

/// A guest agent: which commands are enabled, what fsinfo and /proc/mounts say, and
/// whether `umount` succeeds.
#[derive(Clone)]
pub(crate) struct Guest {
    pub(crate) fsinfo: Option<Value>,
    pub(crate) exec: bool,
    pub(crate) proc_mounts: &'static str,
    pub(crate) umount_ok: bool,
}

impl Guest {
    pub(crate) fn script(self) -> impl Fn(&str, &Value) -> HvResult<Value> + Send + Sync + 'static {
        let last = Arc::new(std::sync::Mutex::new(String::new()));
        move |domain, req| {
            let cmd = req["execute"].as_str().unwrap();
            match cmd {
                "guest-info" => Ok(json!({"version": "7.2.0", "supported_commands": [
                    {"name": "guest-get-fsinfo", "enabled": self.fsinfo.is_some()},
                    {"name": "guest-exec", "enabled": self.exec},
                    {"name": "guest-exec-status", "enabled": self.exec},
                ]})),
                "guest-get-fsinfo" => Ok(self.fsinfo.clone().unwrap()),
                "guest-exec" => {
                    let args = &req["arguments"];
                    let mut l = last.lock().unwrap();
                    *l = format!(
                        "{} {}",
                        args["path"].as_str().unwrap(),
                        args["arg"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a.as_str().unwrap())
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    Ok(json!({"pid": 7}))
                }
                "guest-exec-status" => {
                    use base64::Engine as _;
                    let l = last.lock().unwrap().clone();
                    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                    if l.starts_with("cat ") {
                        Ok(
                            json!({"exited": true, "exitcode": 0, "out-data": b64(self.proc_mounts)}),
                        )
                    } else if self.umount_ok {
                        Ok(json!({"exited": true, "exitcode": 0}))
                    } else {
                        Ok(json!({"exited": true, "exitcode": 1,
                            "err-data": b64("umount: can't unmount /mnt: Device or resource busy\n")}))
                    }
                }
                other => panic!("{domain}: unexpected agent command {other}"),
            }
        }
    }
}

pub(crate) fn fsinfo_sr0(mountpoint: &str, unit: u32) -> Value {
    json!([{"name": "sr0", "mountpoint": mountpoint, "type": "iso9660",
            "disk": [{"bus-type": "sata", "bus": 0, "target": 0, "unit": unit, "dev": "/dev/sr0"}]}])
}

pub(crate) fn linux_guest() -> Guest {
    Guest {
        fsinfo: Some(fsinfo_sr0("/mnt", 0)),
        exec: true,
        proc_mounts: "",
        umount_ok: true,
    }
}

pub(crate) fn exec_calls(hv: &FakeHypervisor, name: &str) -> Vec<Value> {
    hv.agent_calls(name)
        .into_iter()
        .filter(|c| c["execute"] == "guest-exec")
        .map(|c| c["arguments"].clone())
        .collect()
}

pub(crate) const ISO: &str = "/isos/a b é.iso";

pub(crate) fn locked_when_not_forced(hv: &FakeHypervisor) {
    hv.on_device_change(|domain, xml, _scope, force| {
        if force {
            Ok(())
        } else {
            Err(HvError::TrayLocked {
                domain: domain.to_string(),
                drive: crate::domxml::parse(&format!("<domain><devices>{xml}</devices></domain>"))
                    .unwrap()
                    .cdroms[0]
                    .target
                    .clone(),
            })
        }
    });
}

// ------------------------------------------------------------------------ drives from XML

pub(crate) fn iso_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("my disc \"é\" & co.iso");
    std::fs::write(&p, b"CD001").unwrap();
    (dir, p)
}

pub(crate) fn req<'a>(vm: &'a str, iso: &'a Path) -> MountRequest<'a> {
    MountRequest {
        vm,
        iso,
        drive: None,
        scope: ScopeChoice::Both,
    }
}

pub(crate) fn batch_host() -> FakeHypervisor {
    let with = |name: &str, src: Option<&str>| xml(name, &[("sda", "sata", src, 0)], &["sata"]);
    let hv = FakeHypervisor::new()
        .with_domain(
            FakeDomain::new("a-run", DomainState::Running)
                .with_xml(&with("a-run", Some(ISO)))
                .with_agent(linux_guest().script()),
        )
        .with_domain(
            FakeDomain::new("b-off", DomainState::ShutOff).with_xml(&with("b-off", Some(ISO))),
        )
        .with_domain(
            FakeDomain::new("c-locked", DomainState::Running)
                .with_xml(&with("c-locked", Some(ISO))),
        )
        .with_domain(
            FakeDomain::new("d-other", DomainState::ShutOff)
                .with_xml(&with("d-other", Some("/isos/other.iso"))),
        )
        .with_domain(
            FakeDomain::new("e-empty", DomainState::ShutOff).with_xml(&with("e-empty", None)),
        )
        .with_domain(
            FakeDomain::new("f-gone", DomainState::Running).with_xml(&with("f-gone", Some(ISO))),
        )
        .with_domain(
            FakeDomain::new("g-nodrive", DomainState::ShutOff).with_xml(&xml(
                "g-nodrive",
                &[],
                &[],
            )),
        );
    hv.on_device_change(|domain, _xml, _scope, force| match domain {
        "c-locked" if !force => Err(HvError::TrayLocked {
            domain: domain.into(),
            drive: "sda".into(),
        }),
        "f-gone" => Err(HvError::NoSuchDomain(domain.into())),
        _ => Ok(()),
    });
    hv
}
