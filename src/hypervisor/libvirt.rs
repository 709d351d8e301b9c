//! The `native libvirt adapter (virt crate). (Being written; see issue 2.)

use std::time::Duration;

use super::{ChangeScope, DomainInfo, HvError, HvResult, Hypervisor, StorageVolume, XmlScope};

pub struct NativeHypervisor {
    uri: Option<String>,
}

impl NativeHypervisor {
    pub fn open(uri: Option<&str>) -> HvResult<NativeHypervisor> {
        Ok(NativeHypervisor {
            uri: uri.map(str::to_string),
        })
    }
}

fn todo_err() -> HvError {
    HvError::BackendUnavailable("native", "not implemented yet".to_string())
}

impl Hypervisor for NativeHypervisor {
    fn uri(&self) -> String {
        self.uri.clone().unwrap_or_default()
    }
    fn list_domains(&self) -> HvResult<Vec<DomainInfo>> {
        Err(todo_err())
    }
    fn domain_xml(&self, _domain: &str, _scope: XmlScope) -> HvResult<String> {
        Err(todo_err())
    }
    fn agent_command(
        &self,
        _domain: &str,
        _command: &serde_json::Value,
        _timeout: Duration,
    ) -> HvResult<serde_json::Value> {
        Err(todo_err())
    }
    fn update_device(&self, _d: &str, _x: &str, _s: ChangeScope, _f: bool) -> HvResult<()> {
        Err(todo_err())
    }
    fn attach_device(&self, _d: &str, _x: &str, _s: ChangeScope) -> HvResult<()> {
        Err(todo_err())
    }
    fn list_volumes(&self) -> HvResult<Vec<StorageVolume>> {
        Err(todo_err())
    }
}
