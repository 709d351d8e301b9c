//! Dismounting: for each chosen drive, unmount the disc inside the guest (when it runs
//! and its agent lets us), then empty the drive at the hypervisor — live, saved config or
//! both, whichever holds the disc. Batches run in parallel and never stop early.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{device_error, guest};
use crate::domxml;
use crate::hypervisor::{ChangeScope, HvError, Hypervisor};
use crate::snapshot::media::{
    Content, DriveOutcome, DriveReport, GuestUnmount, IsoMatch, MediaSlot, VmMedia, VmReport,
};

/// Which drives of a VM an eject is about.
#[derive(Debug, Clone)]
pub enum Which {
    /// Every drive.
    All,
    /// One drive by target name.
    Drive(String),
    /// The drives holding this ISO (in either definition); only drive `.1` when given.
    Holding(IsoMatch, Option<String>),
}

/// Knobs of a dismount. The guest decides how many mounts it reports and how slowly it
/// answers, so the guest-side step has bounds of its own: a number of mount points per
/// VM, a time per VM, and a time for the whole batch — past them the step is cut short
/// (and says so) and the eject at the hypervisor still runs.
#[derive(Debug, Clone, Copy)]
pub struct EjectOptions {
    pub force: bool,
    /// Timeout of each guest agent call.
    pub agent_timeout: Duration,
    /// How long one `umount` inside the guest may take.
    pub umount_timeout: Duration,
    /// The most mount points unmounted in one VM.
    pub max_unmounts: usize,
    /// The most time the guest-side step of one VM may take.
    pub guest_budget: Duration,
    /// The most time guest-side steps of a batch may take (from its start).
    pub batch_budget: Duration,
    /// VMs handled at once in a batch.
    pub jobs: usize,
}

impl EjectOptions {
    pub fn new(force: bool, agent_timeout: Duration, jobs: usize) -> EjectOptions {
        EjectOptions {
            force,
            agent_timeout,
            umount_timeout: Duration::from_secs(10),
            max_unmounts: 8,
            guest_budget: Duration::from_secs(30),
            batch_budget: Duration::from_secs(300),
            jobs: jobs.max(1),
        }
    }
}

/// Dismount the chosen drives of one VM: unmount inside the guest (when it runs and its
/// agent lets us), then eject at the hypervisor, live and/or config as each drive needs.
pub fn eject_vm(hv: &dyn Hypervisor, vm: &VmMedia, which: &Which, opts: &EjectOptions) -> VmReport {
    let lost = AtomicBool::new(false);
    eject_vm_until(
        hv,
        vm,
        which,
        opts,
        Instant::now() + opts.batch_budget,
        &lost,
    )
}

/// [`eject_vm`] within a batch whose guest-side steps must end by `batch_deadline`;
/// `lost` is set when the connection to libvirt is found gone.
fn eject_vm_until(
    hv: &dyn Hypervisor,
    vm: &VmMedia,
    which: &Which,
    opts: &EjectOptions,
    batch_deadline: Instant,
    lost: &AtomicBool,
) -> VmReport {
    let selected: Vec<&MediaSlot> = vm
        .drives
        .iter()
        .filter(|d| match which {
            Which::All => true,
            Which::Drive(t) => &d.target == t,
            Which::Holding(iso, drive) => {
                d.holds(iso) && drive.as_ref().is_none_or(|t| &d.target == t)
            }
        })
        .collect();
    // Per drive: which definitions to empty, and the discs they hold.
    let plans: Vec<(&MediaSlot, ChangeScope, Vec<String>)> = selected
        .iter()
        .map(|d| {
            let wanted = |c: &Option<Content>| -> Option<String> {
                let s = c.as_ref()?.source.clone()?;
                match which {
                    Which::Holding(iso, _) if !iso.matches(&s) => None,
                    _ => Some(s),
                }
            };
            let live = wanted(&d.live);
            let config = wanted(&d.config);
            let scope = ChangeScope {
                live: live.is_some(),
                config: config.is_some(),
            };
            let mut sources: Vec<String> = live.into_iter().chain(config).collect();
            sources.dedup();
            (*d, scope, sources)
        })
        .collect();
    let live_targets: Vec<String> = plans
        .iter()
        .filter(|(_, s, _)| s.live)
        .map(|(d, _, _)| d.target.clone())
        .collect();
    let guest = if live_targets.is_empty() {
        GuestUnmount::default()
    } else if !vm.state.agent_may_answer() {
        GuestUnmount::skipped(format!("the VM is {}", vm.state))
    } else if Instant::now() >= batch_deadline {
        GuestUnmount::skipped(format!(
            "the batch's {} for guest-side steps ran out",
            crate::units::seconds(opts.batch_budget)
        ))
    } else {
        let deadline = batch_deadline.min(Instant::now() + opts.guest_budget);
        guest::unmount(hv, vm, &live_targets, opts, deadline)
    };
    let drives = plans
        .into_iter()
        .map(|(d, scope, sources)| {
            let outcome = if !scope.live && !scope.config {
                DriveOutcome::AlreadyEmpty
            } else {
                eject_drive(hv, &vm.name, d, scope, sources, opts.force, lost)
            };
            DriveReport {
                target: d.target.clone(),
                outcome,
            }
        })
        .collect();
    VmReport {
        vm: vm.name.clone(),
        drives,
        guest,
        error: None,
        not_attempted: false,
    }
}

fn eject_drive(
    hv: &dyn Hypervisor,
    vm: &str,
    d: &MediaSlot,
    scope: ChangeScope,
    sources: Vec<String>,
    force: bool,
    lost: &AtomicBool,
) -> DriveOutcome {
    let xml = match domxml::cdrom_device_xml(&d.target, d.bus.as_deref(), None) {
        Ok(x) => x,
        Err(e) => return DriveOutcome::Error(e),
    };
    match hv.update_device(vm, &xml, scope, force) {
        Ok(()) => DriveOutcome::Ejected {
            sources,
            scope,
            forced: force && scope.live,
        },
        Err(HvError::TrayLocked { .. }) => DriveOutcome::Locked,
        Err(e) => {
            if matches!(e, HvError::Unreachable { .. }) {
                lost.store(true, Ordering::SeqCst);
            }
            DriveOutcome::Error(device_error(&e, vm, &d.target))
        }
    }
}

/// Run `eject_vm` over many VMs, `opts.jobs` at a time; reports come back sorted by VM.
/// Once the connection to libvirt is found gone, no further VM is started (each would
/// fail the same way): those come back [`VmReport::not_attempted`].
pub fn eject_many(
    hv: &dyn Hypervisor,
    vms: &[VmMedia],
    which: &Which,
    opts: &EjectOptions,
) -> Vec<VmReport> {
    let batch_deadline = Instant::now() + opts.batch_budget;
    let next = AtomicUsize::new(0);
    let lost = AtomicBool::new(false);
    let reports = Mutex::new(Vec::with_capacity(vms.len()));
    let workers = opts.jobs.min(vms.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(vm) = vms.get(i) else { break };
                let report = if lost.load(Ordering::SeqCst) {
                    VmReport::not_attempted(&vm.name)
                } else {
                    eject_vm_until(hv, vm, which, opts, batch_deadline, &lost)
                };
                reports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(report);
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by(|a, b| a.vm.cmp(&b.vm));
    reports
}
