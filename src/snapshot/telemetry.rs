//! What `serve` exports beyond the table's facts: which metric families are on, and per
//! domain the bulk statistics of the scan plus what describes each disk and interface.
//! Plain data: the probe fills it, the metrics renderer only reads it.

use crate::domxml::{DiskFacts, InterfaceFacts};
use crate::hypervisor::{DomainStats, StatsGroups};

/// The metric families that can be switched off (`serve --collect`, `collect` in the
/// config file). Everything else `serve` exports is always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// Block devices: I/O counters and times, capacity, allocation, physical size.
    pub block: bool,
    /// Network interfaces: bytes, packets, errors and drops each way.
    pub interface: bool,
    /// Memory balloon: the guest's view of its memory, swap and page faults.
    pub balloon: bool,
    /// vCPUs: current and maximum; per vCPU state, time, wait and delay.
    pub vcpu: bool,
    /// The domain series of Debian's prometheus-libvirt-exporter 0.2.0 under its names
    /// (`libvirt_domain_info_*`, `libvirt_domain_state_code`, `libvirt_domains_number`),
    /// so its dashboards work unchanged.
    pub compat: bool,
}

impl Default for Families {
    /// Every family: all are on unless switched off.
    fn default() -> Families {
        Families::ALL
    }
}

impl Families {
    pub const ALL: Families = Families {
        block: true,
        interface: true,
        balloon: true,
        vcpu: true,
        compat: true,
    };
    pub const NONE: Families = Families {
        block: false,
        interface: false,
        balloon: false,
        vcpu: false,
        compat: false,
    };
    /// Every family's name, in the order help texts list them.
    pub const NAMES: [&'static str; 5] = ["block", "interface", "balloon", "vcpu", "compat"];

    fn slot(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "block" => &mut self.block,
            "interface" => &mut self.interface,
            "balloon" => &mut self.balloon,
            "vcpu" => &mut self.vcpu,
            "compat" => &mut self.compat,
            _ => return None,
        })
    }

    /// The families named in `items` — each item one name or a comma-separated list;
    /// `all` and `none` stand for every family and for none. Names are case-insensitive;
    /// an unknown one is an error naming the valid ones.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Families, String> {
        let mut out = Families::NONE;
        for item in items {
            for name in item.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let name = name.to_ascii_lowercase();
                match name.as_str() {
                    "all" => out = Families::ALL,
                    "none" => {}
                    _ => match out.slot(&name) {
                        Some(on) => *on = true,
                        None => {
                            return Err(format!(
                                "unknown metric family {name:?} (families: {}; or all, none)",
                                Families::NAMES.join(", ")
                            ))
                        }
                    },
                }
            }
        }
        Ok(out)
    }

    /// The names of the families that are on (`none` when none is).
    pub fn names(self) -> String {
        let mut this = self;
        let on: Vec<&str> = Families::NAMES
            .into_iter()
            .filter(|n| this.slot(n).is_some_and(|on| *on))
            .collect();
        if on.is_empty() {
            "none".to_string()
        } else {
            on.join(",")
        }
    }

    /// The libvirt statistics groups these families need.
    pub fn groups(self) -> StatsGroups {
        StatsGroups {
            balloon: self.balloon,
            vcpu: self.vcpu,
            interface: self.interface,
            block: self.block,
        }
    }

    /// Whether any family needs the bulk statistics call.
    pub fn need_stats(self) -> bool {
        self.block || self.interface || self.balloon || self.vcpu
    }
}

/// One domain's statistics and device descriptions for one scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainTelemetry {
    /// What the bulk statistics call returned for this domain.
    pub stats: Option<DomainStats>,
    /// Why `stats` is missing when the families need it: the call failed or did not
    /// return within the scan deadline, or libvirt left this domain out.
    pub stats_error: Option<String>,
    /// The disks of the domain XML this scan read (for `*_info` and label values).
    pub disks: Vec<DiskFacts>,
    /// The network interfaces of the same XML.
    pub interfaces: Vec<InterfaceFacts>,
}

/// `serve`'s part of a scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    /// The families that were collected (and are to be rendered).
    pub families: Families,
    /// One entry per row of the snapshot's `vms`, in the same order.
    pub domains: Vec<DomainTelemetry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_lists_parse_and_print() {
        assert_eq!(Families::parse(["all"]), Ok(Families::ALL));
        assert_eq!(Families::parse(["none"]), Ok(Families::NONE));
        assert_eq!(Families::parse([""]), Ok(Families::NONE));
        let some = Families::parse(["Block, vcpu", "compat"]).unwrap();
        assert_eq!(
            some,
            Families {
                block: true,
                vcpu: true,
                compat: true,
                ..Families::NONE
            }
        );
        assert_eq!(some.names(), "block,vcpu,compat");
        assert_eq!(Families::NONE.names(), "none");
        assert_eq!(Families::ALL.names(), Families::NAMES.join(","));
        let e = Families::parse(["block,disk"]).unwrap_err();
        assert!(e.contains("\"disk\"") && e.contains("interface"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn only_statistics_families_need_the_bulk_call() {
        let compat_only = Families {
            compat: true,
            ..Families::NONE
        };
        assert!(!compat_only.need_stats());
        assert_eq!(compat_only.groups(), StatsGroups::default());
        assert!(Families::ALL.need_stats());
        assert_eq!(Families::ALL.groups(), StatsGroups::ALL);
    }
}
