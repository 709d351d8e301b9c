//! Pure functions that turn `virsh`'s text (dominfo, domstats, list, vol-list, volume
//! XML) into the port's types.
//!
//! Nothing here starts a process, so every shape of output is pinned by a fixture file
//! under `tests/fixtures/virsh/` and tested without libvirt.

use std::collections::BTreeMap;

use unicode_width::UnicodeWidthChar;

use crate::hypervisor::stats::StatValue;
use crate::hypervisor::{DomainInfo, DomainState, DomainStats};

/// Parse a decimal like `6.1`, `6,1` (translated) or `1795627652` seconds into
/// nanoseconds without going through a float.
fn parse_seconds_to_ns(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches('s').trim();
    let (int_part, frac_part) = match t.find(['.', ',']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = int_part.parse().ok()?;
    let mut frac_ns: u64 = 0;
    for (i, b) in frac_part.bytes().take(9).enumerate() {
        frac_ns += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// `8388608 KiB` (or the old `kB`) → 8388608.
fn parse_kib(text: &str) -> Option<u64> {
    let t = text.trim();
    let number = t.split_whitespace().next()?;
    let unit = t[number.len()..].trim();
    let value: u64 = number.parse().ok()?;
    match unit {
        "" | "KiB" | "kB" | "KB" | "k" => Some(value),
        "MiB" => value.checked_mul(1024),
        "GiB" => value.checked_mul(1024 * 1024),
        _ => None,
    }
}

/// The state words of `virsh dominfo` / `virsh domstate`, English and German.
fn parse_state_word(text: &str) -> Option<DomainState> {
    let t = text.trim().to_lowercase();
    Some(match t.as_str() {
        "running" | "laufend" => DomainState::Running,
        "idle" | "blocked" => DomainState::Blocked,
        "paused" | "pausiert" => DomainState::Paused,
        "in shutdown" | "beim herunterfahren" => DomainState::ShuttingDown,
        "shut off" | "ausgeschaltet" => DomainState::ShutOff,
        "crashed" | "abgestürzt" => DomainState::Crashed,
        "pmsuspended" => DomainState::PmSuspended,
        "no state" | "kein status" => DomainState::NoState,
        _ => return None,
    })
}

fn parse_yes_no(text: &str) -> Option<bool> {
    match text.trim().to_lowercase().as_str() {
        "yes" | "ja" => Some(true),
        "no" | "nein" => Some(false),
        _ => None,
    }
}

/// Parse `virsh dominfo` text. The child always runs with `LC_ALL=C`, but the labels of
/// the German translation are understood too, so text captured from an operator's shell
/// (the seed's original failure) parses as well.
///
/// Missing `CPU time` (libvirt omits it when it is zero, e.g. shut off) means 0. Missing
/// `Used memory` means the domain's configured allocation, which libvirt reports as the
/// maximum for a domain that is not running; `Max memory: no limit` falls back the other
/// way round. Name, UUID and State are required.
pub fn parse_dominfo(text: &str) -> Result<DomainInfo, String> {
    let mut name = None;
    let mut uuid = None;
    let mut state = None;
    let mut persistent = None;
    let mut vcpus = None;
    let mut max_kib = None;
    let mut used_kib = None;
    let mut cpu_ns = None;
    for line in text.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match label.trim() {
            "Name" => name = Some(value.to_string()),
            "UUID" => uuid = Some(value.to_string()),
            "State" | "Status" => {
                state = Some(
                    parse_state_word(value).ok_or_else(|| format!("unknown state {value:?}"))?,
                )
            }
            "Persistent" | "Bleibend" => persistent = parse_yes_no(value),
            "CPU(s)" => vcpus = value.parse::<u32>().ok(),
            "CPU time" | "CPU-Zeit" => {
                cpu_ns = Some(
                    parse_seconds_to_ns(value)
                        .ok_or_else(|| format!("cannot read CPU time {value:?}"))?,
                )
            }
            "Max memory" | "Max Speicher" | "Maximaler Speicher" => max_kib = parse_kib(value),
            "Used memory" | "Verwendeter Speicher" => {
                used_kib = Some(
                    parse_kib(value).ok_or_else(|| format!("cannot read used memory {value:?}"))?,
                )
            }
            _ => {}
        }
    }
    let name = name.ok_or("no Name line")?;
    let uuid = uuid.ok_or("no UUID line")?;
    let state = state.ok_or("no State line")?;
    let (memory_max_kib, memory_used_kib) = match (max_kib, used_kib) {
        (Some(m), Some(u)) => (m, u),
        (Some(m), None) => (m, m),
        (None, Some(u)) => (u, u),
        (None, None) => return Err("neither Max memory nor Used memory".to_string()),
    };
    Ok(DomainInfo {
        name,
        uuid,
        state,
        persistent: persistent.unwrap_or(true),
        vcpus: vcpus.unwrap_or(0),
        memory_max_kib,
        memory_used_kib,
        cpu_time_ns: cpu_ns.unwrap_or(0),
        definition_tag: None,
    })
}

/// The `CPU(s):` line of `virsh nodeinfo` (a count above 0).
pub fn parse_nodeinfo_cpus(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "CPU(s)")
            .then(|| v.trim().parse::<u32>().ok())
            .flatten()
            .filter(|&n| n > 0)
    })
}

/// One `Domain: 'name'` record of `virsh domstats --raw`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomStats {
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl DomStats {
    fn u64_field(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(|v| v.parse().ok())
    }

    pub fn state(&self) -> Option<DomainState> {
        self.u64_field("state.state")
            .and_then(|c| u32::try_from(c).ok())
            .map(DomainState::from_libvirt)
    }

    /// The record as the port's typed statistics (every value travels as text).
    pub fn to_stats(&self) -> DomainStats {
        DomainStats::from_fields(
            &self.name,
            self.fields
                .iter()
                .map(|(k, v)| (k.as_str(), StatValue::Text(v))),
        )
    }

    /// Our fields, when the record has all we need. Drivers differ: the QEMU driver
    /// reports balloon and vCPU counts for every domain and `cpu.time` for running ones;
    /// the test driver reports the state only. `None` sends the caller to `dominfo`.
    pub fn to_info(&self, uuid: &str, persistent: bool) -> Option<DomainInfo> {
        let state = self.state()?;
        let max = self.u64_field("balloon.maximum")?;
        let used = self.u64_field("balloon.current").unwrap_or(max);
        let vcpus = self
            .u64_field("vcpu.current")
            .and_then(|v| u32::try_from(v).ok())?;
        // Only a running domain has consumed CPU time we can report. libvirt 9.0 was
        // measured to print a changing `cpu.time` for a shut-off QEMU domain (apparently
        // read from its stale pid), where dominfo and virDomainGetInfo say 0.
        let cpu = match (state.is_active(), self.u64_field("cpu.time")) {
            (true, Some(ns)) => ns,
            (true, None) => return None,
            (false, _) => 0,
        };
        Some(DomainInfo {
            name: self.name.clone(),
            uuid: uuid.to_string(),
            state,
            persistent,
            vcpus,
            memory_max_kib: max,
            memory_used_kib: used,
            cpu_time_ns: cpu,
            definition_tag: None,
        })
    }
}

/// Parse `virsh domstats --raw`. Names are printed between single quotes without any
/// escaping, so the name is everything between the first and the last quote.
pub fn parse_domstats(text: &str) -> Result<Vec<DomStats>, String> {
    let mut out: Vec<DomStats> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Domain: ") {
            let name = rest
                .trim_end()
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .ok_or_else(|| format!("cannot read domain name in {line:?}"))?;
            out.push(DomStats {
                name: name.to_string(),
                fields: BTreeMap::new(),
            });
        } else if let Some((key, value)) = line.trim().split_once('=') {
            let record = out
                .last_mut()
                .ok_or_else(|| format!("stat {key:?} before any Domain line"))?;
            record
                .fields
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    Ok(out)
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Parse `virsh list --all --uuid --name`: `UUID NAME` per line.
pub fn parse_list_uuid_name(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let line = line.trim_start();
        let (uuid, name) = line
            .split_once(' ')
            .ok_or_else(|| format!("expected 'UUID NAME', got {line:?}"))?;
        if !looks_like_uuid(uuid) {
            return Err(format!("expected a UUID, got {uuid:?}"));
        }
        out.push((uuid.to_string(), name.to_string()));
    }
    Ok(out)
}

/// Parse a one-item-per-line listing (`list --uuid`, `pool-list --name`); virsh pads
/// some of them with trailing blanks.
pub fn parse_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Display column where each header word starts (virsh aligns its tables by display
/// width, not bytes, so non-ASCII names shift byte offsets but not columns).
fn column_starts(header: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut col = 0;
    let mut prev_blank = true;
    for c in header.chars() {
        let blank = c == ' ';
        if !blank && prev_blank {
            starts.push(col);
        }
        prev_blank = blank;
        col += c.width().unwrap_or(0);
    }
    starts
}

/// Split a table row at the given display columns.
fn split_at_columns(row: &str, starts: &[usize]) -> Vec<String> {
    let mut cells = vec![String::new(); starts.len()];
    let mut col = 0;
    for c in row.chars() {
        let idx = starts.iter().rposition(|&s| s <= col).unwrap_or(0);
        cells[idx].push(c);
        col += c.width().unwrap_or(0);
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Parse the `Name Path` table of `virsh vol-list --pool P`. Cells are cut at the header's
/// columns so names and paths with blanks survive.
pub fn parse_vol_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let header = lines.next().ok_or("empty volume listing")?;
    let starts = column_starts(header);
    if starts.len() < 2 {
        return Err(format!("unexpected vol-list header {header:?}"));
    }
    // The rule under the header, only there: a volume may be named `---x.iso`.
    let mut lines = lines.peekable();
    if lines
        .peek()
        .is_some_and(|l| l.trim_start().starts_with("---"))
    {
        lines.next();
    }
    let mut out = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cells = split_at_columns(line, &starts);
        out.push((cells[0].clone(), cells[1].clone()));
    }
    Ok(out)
}

/// What `virsh vol-dumpxml` tells us: name, path and capacity in bytes.
pub fn parse_volume_xml(xml: &str) -> Result<(String, Option<String>, Option<u64>), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("volume XML: {e}"))?;
    let root = doc.root_element();
    let child_text = |parent: roxmltree::Node, name: &str| {
        parent
            .children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
    };
    let name = child_text(root, "name").ok_or("volume XML without <name>")?;
    let path = root
        .children()
        .find(|n| n.has_tag_name("target"))
        .and_then(|t| child_text(t, "path"));
    let capacity = root
        .children()
        .find(|n| n.has_tag_name("capacity"))
        .and_then(|n| {
            let value: u64 = n.text()?.trim().parse().ok()?;
            let factor: u64 = match n.attribute("unit").unwrap_or("bytes") {
                "bytes" | "b" | "B" => 1,
                "KiB" | "K" | "k" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                "TiB" | "T" => 1 << 40,
                "KB" => 1000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            value.checked_mul(factor)
        });
    Ok((name, path, capacity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::virsh::fixture;
    use crate::hypervisor::HvError;

    #[test]
    fn nodeinfo_gives_the_cpu_count() {
        let text =
            "CPU model:           x86_64\nCPU(s):              16\nCPU frequency:       2400 MHz\n";
        assert_eq!(parse_nodeinfo_cpus(text), Some(16));
        assert_eq!(parse_nodeinfo_cpus("CPU(s): 0\n"), None);
        assert_eq!(parse_nodeinfo_cpus("CPU(s): many\n"), None);
        assert_eq!(parse_nodeinfo_cpus(""), None);
    }

    #[test]
    fn dominfo_running() {
        let info = parse_dominfo(&fixture("dominfo_running.txt")).unwrap();
        assert_eq!(info.name, "test");
        assert_eq!(info.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(info.state, DomainState::Running);
        assert!(info.persistent);
        assert_eq!(info.vcpus, 2);
        assert_eq!(info.memory_max_kib, 8_388_608);
        assert_eq!(info.memory_used_kib, 2_097_152);
        assert_eq!(info.cpu_time_ns, 1_795_627_652_400_000_000);
    }

    #[test]
    fn dominfo_german_decimal_comma() {
        let info = parse_dominfo(&fixture("dominfo_de.txt")).unwrap();
        assert_eq!(info.name, "web01");
        assert_eq!(info.state, DomainState::Running);
        assert_eq!(info.cpu_time_ns, 6_100_000_000);
        assert_eq!(info.memory_max_kib, 262_144);
        assert_eq!(info.memory_used_kib, 131_072);
        assert!(!info.persistent);
        assert_eq!(info.vcpus, 1);
    }

    #[test]
    fn dominfo_german_long_labels() {
        let info = parse_dominfo(&fixture("dominfo_de_long_labels.txt")).unwrap();
        assert_eq!(info.state, DomainState::ShutOff);
        assert_eq!(info.memory_max_kib, 262_144);
        assert_eq!(info.cpu_time_ns, 0);
    }

    #[test]
    fn dominfo_shut_off_without_cpu_time() {
        let info = parse_dominfo(&fixture("dominfo_shutoff_no_cputime.txt")).unwrap();
        assert_eq!(info.state, DomainState::ShutOff);
        assert_eq!(info.cpu_time_ns, 0);
        assert_eq!(info.memory_used_kib, 1_048_576);
    }

    #[test]
    fn dominfo_without_used_memory_uses_max() {
        let info = parse_dominfo(&fixture("dominfo_no_used_memory.txt")).unwrap();
        assert_eq!(info.memory_max_kib, 524_288);
        assert_eq!(info.memory_used_kib, 524_288);
        assert_eq!(info.state, DomainState::Paused);
    }

    #[test]
    fn dominfo_no_limit_and_old_kb_unit() {
        let info = parse_dominfo(&fixture("dominfo_no_limit_kb.txt")).unwrap();
        assert_eq!(info.memory_max_kib, 131_072);
        assert_eq!(info.memory_used_kib, 131_072);
        assert_eq!(info.state, DomainState::Blocked);
    }

    #[test]
    fn dominfo_garbage_is_an_error() {
        assert!(parse_dominfo(&fixture("dominfo_garbage.txt")).is_err());
        assert!(parse_dominfo("").is_err());
        assert!(parse_dominfo("Name: x\nUUID: y\nState: dancing\n").is_err());
    }

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(parse_seconds_to_ns("6,1s"), Some(6_100_000_000));
        assert_eq!(parse_seconds_to_ns("0.0s"), Some(0));
        assert_eq!(parse_seconds_to_ns("12s"), Some(12_000_000_000));
        assert_eq!(parse_seconds_to_ns("1.123456789123s"), Some(1_123_456_789));
        assert_eq!(parse_seconds_to_ns("abc"), None);
        assert_eq!(parse_seconds_to_ns("-1s"), None);
    }

    #[test]
    fn domstats_qemu_records_are_complete() {
        let stats = parse_domstats(&fixture("domstats_qemu.txt")).unwrap();
        assert_eq!(stats.len(), 3);
        let run = stats[0].to_info("u", true).unwrap();
        assert_eq!(run.name, "diq-ubuntu");
        assert_eq!(run.state, DomainState::Running);
        assert_eq!(run.memory_max_kib, 262_144);
        assert_eq!(run.memory_used_kib, 262_144);
        assert_eq!(run.vcpus, 1);
        assert_eq!(run.cpu_time_ns, 9_876_543_210);
        let off = stats[1].to_info("u", true).unwrap();
        assert_eq!(off.name, "it's off");
        assert_eq!(off.state, DomainState::ShutOff);
        assert_eq!(off.cpu_time_ns, 0);
        let paused = stats[2].to_info("u", false).unwrap();
        assert_eq!(paused.state, DomainState::Paused);
        assert!(!paused.persistent);
    }

    #[test]
    fn domstats_test_driver_needs_dominfo() {
        let stats = parse_domstats(&fixture("domstats_test_driver.txt")).unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].state(), Some(DomainState::Running));
        assert_eq!(stats[0].to_info("u", true), None);
    }

    #[test]
    fn domstats_running_without_cpu_time_needs_dominfo() {
        let stats = parse_domstats(&fixture("domstats_running_no_cpu.txt")).unwrap();
        assert_eq!(stats[0].to_info("u", true), None);
    }

    #[test]
    fn domstats_families_as_libvirt_9_prints_them() {
        // Captured on the harness: `virsh domstats --raw --nowait --state --cpu-total
        // --balloon --vcpu --interface --block` for a running guest with its disc, one
        // with an empty drive, a paused one, shut-off ones with and without a drive.
        let stats: Vec<DomainStats> = parse_domstats(&fixture("domstats_harness_families.txt"))
            .unwrap()
            .iter()
            .map(DomStats::to_stats)
            .collect();
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "diq-ubuntu",
                "diq-centos",
                "diq-paused",
                "diq-win2k22",
                "diq-media-bare"
            ]
        );
        let ubuntu = &stats[0];
        assert_eq!(ubuntu.state, Some(DomainState::Running));
        assert_eq!(ubuntu.cpu_time_ns, Some(35_280_000_000));
        assert_eq!(ubuntu.balloon.maximum_kib, Some(262_144));
        assert_eq!(ubuntu.balloon.rss_kib, Some(259_480));
        assert_eq!(ubuntu.balloon.disk_caches_kib, Some(11_588));
        assert_eq!(ubuntu.balloon.minor_fault, Some(1_802));
        assert_eq!(ubuntu.vcpu.current, Some(1));
        assert_eq!(ubuntu.vcpu.vcpus.len(), 1);
        assert_eq!(ubuntu.vcpu.vcpus[0].delay_ns, Some(42_860_323_268));
        assert!(ubuntu.interfaces.is_empty());
        let sda = &ubuntu.blocks[0];
        assert_eq!(sda.name, "sda");
        assert_eq!(
            sda.path.as_deref(),
            Some("/var/lib/dismount-iso-qemu-harness/iso/harness.iso")
        );
        assert_eq!(
            (sda.rd_reqs, sda.rd_bytes, sda.rd_times_ns),
            (Some(6), Some(2150), Some(502_220))
        );
        assert_eq!((sda.fl_reqs, sda.fl_times_ns), (Some(0), Some(0)));
        assert_eq!(
            (sda.allocation, sda.capacity, sda.physical),
            (Some(0), Some(376_832), Some(376_832))
        );
        // An empty drive: counters, no path, no sizes.
        let empty = &stats[1].blocks[0];
        assert_eq!(
            (empty.path.as_deref(), empty.capacity, empty.rd_reqs),
            (None, None, Some(9))
        );
        assert_eq!(stats[2].state, Some(DomainState::Paused));
        assert!(stats[2].blocks.is_empty());
        let off = &stats[3];
        assert_eq!(off.state, Some(DomainState::ShutOff));
        assert!(off.vcpu.vcpus.is_empty() && off.balloon.rss_kib.is_none());
        assert_eq!(off.blocks[0].rd_reqs, None);
        assert_eq!(off.blocks[0].physical, Some(376_832));
        assert!(stats[4].blocks.is_empty());
    }

    #[test]
    fn domstats_interfaces() {
        // libvirt's documented `net.*` keys (the harness guests have no NIC yet); a
        // user-mode NIC has no host device, and libvirt counts it without figures.
        let stats: Vec<DomainStats> = parse_domstats(&fixture("domstats_net.txt"))
            .unwrap()
            .iter()
            .map(DomStats::to_stats)
            .collect();
        let web = &stats[0];
        assert_eq!(web.interfaces.len(), 2);
        let vnet0 = &web.interfaces[0];
        assert_eq!(vnet0.name, "vnet0");
        assert_eq!(
            (vnet0.rx_bytes, vnet0.rx_pkts, vnet0.rx_errs, vnet0.rx_drop),
            (Some(5006), Some(61), Some(0), Some(3))
        );
        assert_eq!(
            (vnet0.tx_bytes, vnet0.tx_pkts, vnet0.tx_errs, vnet0.tx_drop),
            (Some(13_262), Some(94), Some(0), Some(0))
        );
        assert_eq!(web.interfaces[1].name, "macvtap0");
        assert!(stats[1].interfaces.is_empty());
    }

    #[test]
    fn domstats_garbage() {
        assert!(parse_domstats(&fixture("domstats_garbage.txt")).is_err());
        assert_eq!(parse_domstats("").unwrap(), vec![]);
    }

    #[test]
    fn list_uuid_name() {
        let list = parse_list_uuid_name(&fixture("list_uuid_name.txt")).unwrap();
        assert_eq!(
            list,
            vec![
                (
                    "6695eb01-f6a4-8304-79aa-97f2502e193f".to_string(),
                    "test".to_string()
                ),
                (
                    "11111111-2222-3333-4444-555555555555".to_string(),
                    "name with  spaces".to_string()
                ),
                (
                    "5a4e1894-ec35-4572-886c-0d0cd3c9aba5".to_string(),
                    "off-ü".to_string()
                ),
            ]
        );
        assert!(parse_list_uuid_name("not-a-uuid name\n").is_err());
        assert!(parse_list_uuid_name("\n\n").unwrap().is_empty());
    }

    #[test]
    fn vol_list_table_with_blanks_and_unicode() {
        let vols = parse_vol_list(&fixture("vol_list.txt")).unwrap();
        assert_eq!(
            vols,
            vec![
                ("b.iso".to_string(), "/srv/isos/b.iso".to_string()),
                (
                    "debian 12.iso".to_string(),
                    "/srv/isos/debian 12.iso".to_string()
                ),
                ("größe.iso".to_string(), "/srv/isos/größe.iso".to_string()),
            ]
        );
        assert!(parse_vol_list(&fixture("vol_list_empty.txt"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn volume_xml() {
        let (name, path, cap) = parse_volume_xml(&fixture("vol_dumpxml.xml")).unwrap();
        assert_eq!(name, "debian 12.iso");
        assert_eq!(path.as_deref(), Some("/srv/isos/debian 12.iso"));
        assert_eq!(cap, Some(654_311_424));
        let (_, _, cap) =
            parse_volume_xml("<volume><name>x</name><capacity unit='KiB'>2</capacity></volume>")
                .unwrap();
        assert_eq!(cap, Some(2048));
        assert!(parse_volume_xml("<volume>").is_err());
    }

    #[test]
    fn agent_replies_as_virsh_prints_them() {
        use crate::hypervisor::agent_reply;
        let reply = agent_reply(
            "vm",
            "guest-get-osinfo",
            &fixture("agent_reply_osinfo.json"),
        );
        assert_eq!(reply.unwrap()["id"], "ubuntu");
        assert_eq!(
            agent_reply("vm", "guest-ping", "{\"return\":{}}\n").unwrap(),
            serde_json::json!({})
        );
        let boom = "{\"error\":{\"class\":\"GenericError\",\"desc\":\"boom\"}}";
        assert!(matches!(
            agent_reply("vm", "c", boom),
            Err(HvError::AgentCommandFailed { message, .. }) if message == "boom"
        ));
        assert!(agent_reply("vm", "c", "").is_err());
        assert!(agent_reply("vm", "c", "{\"id\":1}").is_err());
    }
}
