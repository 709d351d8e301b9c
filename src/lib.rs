//! dismount_iso_qemu: scan libvirt/QEMU VMs, manage their ISO media, edit files inside
//! guests and export the same facts as Prometheus metrics.

pub mod hypervisor;
