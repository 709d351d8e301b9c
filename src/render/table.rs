//! The status table: the seed's four columns at the seed's positions (VM at 0, OS at 21,
//! Memory at 62, CPU time after it), then State and ISO.

use std::io::{self, Write};

use super::text::{cell, sanitize, width};
use crate::snapshot::{Snapshot, VmRow};
use crate::units::{cpu_time, memory_kib};

/// (header, widest value, cell width) of each fixed column; ISO is last and not cut.
const VM: (&str, usize, usize) = ("VM", 20, 21);
const OS: (&str, usize, usize) = ("OS", 40, 41);
const MEMORY: (&str, usize, usize) = ("Memory (used/max)", 22, 23);
const CPU: (&str, usize, usize) = ("CPU time", 16, 17);
const STATE: (&str, usize, usize) = ("State", 13, 14);
const ISO: &str = "ISO";

/// Width of the dashed rule under the header (the seed's length).
const RULE: usize = 110;

/// The text of the ISO column for one VM: every drive's image, `-` when all are empty,
/// `?` when this scan could not read the VM's XML.
pub fn iso_text(row: &VmRow) -> String {
    if row.media_error.is_some() {
        return "?".to_string();
    }
    let isos: Vec<String> = row
        .media
        .iter()
        .filter_map(|d| d.source.as_deref())
        .map(sanitize)
        .collect();
    if isos.is_empty() {
        "-".to_string()
    } else {
        isos.join(", ")
    }
}

/// The OS column: the answer's text, or `-` when unknown.
pub fn os_text(row: &VmRow) -> String {
    row.os
        .text
        .as_deref()
        .map(sanitize)
        .unwrap_or_else(|| "-".to_string())
}

fn line(values: [&str; 6]) -> String {
    let mut s = String::new();
    for (v, (_, max, w)) in values.iter().zip([VM, OS, MEMORY, CPU, STATE]) {
        s.push_str(&cell(v, max, w));
    }
    s.push_str(values[5]);
    s.trim_end().to_string()
}

/// Write the whole table. A header and `no VMs on <URI>` when there are none.
pub fn write_table(out: &mut impl Write, snap: &Snapshot) -> io::Result<()> {
    let header = line([VM.0, OS.0, MEMORY.0, CPU.0, STATE.0, ISO]);
    writeln!(out, "{header}")?;
    writeln!(out, "{}", "-".repeat(RULE.max(width(&header))))?;
    if snap.vms.is_empty() {
        writeln!(out, "no VMs on {}", sanitize(&snap.uri))?;
    }
    for row in &snap.vms {
        let memory = format!(
            "{} / {}",
            memory_kib(row.memory_used_kib),
            memory_kib(row.memory_max_kib)
        );
        let cpu = cpu_time(row.cpu_time_seconds as u64);
        let name = sanitize(&row.name);
        let os = os_text(row);
        let iso = iso_text(row);
        writeln!(
            out,
            "{}",
            line([&name, &os, &memory, &cpu, row.state.as_str(), &iso])
        )?;
    }
    Ok(())
}

/// The table over several hosts: a HOST column first, each host's rows as [`write_table`]
/// gives them.
pub fn write_fleet_table(out: &mut impl Write, snaps: &[(&str, &Snapshot)]) -> io::Result<()> {
    let mut tables = Vec::with_capacity(snaps.len());
    for (host, snap) in snaps {
        let mut buf = Vec::new();
        write_table(&mut buf, snap)?;
        tables.push((*host, String::from_utf8_lossy(&buf).into_owned()));
    }
    super::text::write_with_host_column(out, &tables)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domxml::CdromDrive;
    use crate::hypervisor::DomainState;
    use crate::snapshot::{AgentStatus, OsAnswer, OsSource};

    pub fn row(name: &str, os: Option<&str>, used: u64, max: u64, cpu: f64) -> VmRow {
        VmRow {
            name: name.to_string(),
            uuid: "u".to_string(),
            state: DomainState::Running,
            persistent: true,
            vcpus: 2,
            memory_used_kib: used,
            memory_max_kib: max,
            cpu_time_seconds: cpu,
            media: vec![],
            media_error: None,
            os: match os {
                Some(t) => OsAnswer::known(t.to_string(), None, OsSource::GuestGetOsinfo),
                None => OsAnswer::unknown("agent not connected"),
            },
            agent: AgentStatus::Ok,
            probe_ms: None,
            ages: Default::default(),
        }
    }

    fn snap(vms: Vec<VmRow>) -> Snapshot {
        Snapshot {
            uri: "qemu:///system".to_string(),
            taken_at: 0,
            duration_ms: 0,
            vms,
            errors: vec![],
            telemetry: None,
        }
    }

    fn render(s: &Snapshot) -> String {
        let mut buf = Vec::new();
        write_table(&mut buf, s).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn seed_columns_sit_where_the_seed_put_them() {
        let gib = 1024 * 1024;
        let out = render(&snap(vec![
            row(
                "pinhole_new",
                Some("Ubuntu 18.04.6 LTS"),
                8 * gib,
                8 * gib,
                170_319.4,
            ),
            row(
                "fs00",
                Some("Windows Server 2022 Datacenter"),
                32 * gib,
                32 * gib,
                223_160.0,
            ),
        ]));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with(
            "VM                   OS                                       Memory (used/max)"
        ));
        assert_eq!(lines[0].find("OS"), Some(21));
        assert_eq!(lines[0].find("Memory"), Some(62));
        assert_eq!(lines[1], "-".repeat(width(lines[0])));
        assert_eq!(
            lines[2],
            "pinhole_new          Ubuntu 18.04.6 LTS                       8.0 GiB / 8.0 GiB      1d 23h 18m 39s   running       -"
        );
        assert_eq!(lines[3].find("32.0 GiB / 32.0 GiB"), Some(62));
        assert_eq!(lines[0].find("CPU time"), lines[3].find("2d 13h"));
    }

    #[test]
    fn wide_names_keep_columns_straight_and_long_values_are_cut() {
        let mut r = row(
            "東京-データベース-サーバー-01",
            Some("x\x1b[2J"),
            1024,
            2048,
            0.0,
        );
        r.media = vec![
            CdromDrive {
                target: "sda".into(),
                bus: Some("sata".into()),
                source: Some("/isos/a b.iso".into()),
                readonly: true,
            },
            CdromDrive {
                target: "sdb".into(),
                bus: Some("sata".into()),
                source: Some("/isos/c.iso".into()),
                readonly: true,
            },
        ];
        let out = render(&snap(vec![r]));
        let data = out.lines().nth(2).unwrap();
        assert!(data.contains('…'));
        assert!(!data.contains('\x1b'));
        assert!(data.contains("x\\x1b[2J"));
        assert!(data.ends_with("/isos/a b.iso, /isos/c.iso"));
        // Display column of the OS value is 21 whatever the name's script.
        let prefix: String = data.split("x\\x1b").next().unwrap().to_string();
        assert_eq!(width(&prefix), 21);
    }

    #[test]
    fn empty_host_says_so() {
        let out = render(&snap(vec![]));
        assert_eq!(out.lines().count(), 3);
        assert_eq!(out.lines().nth(2), Some("no VMs on qemu:///system"));
    }
}
