use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::batch::{self, Format, FIELDS};
use super::model::{self, Column, Sample, Why};
use super::state::{Action, Mode, Ui};
use super::view;
use crate::domxml::{CdromDrive, InterfaceFacts};
use crate::hypervisor::{BalloonStats, BlockStats, DomainState, DomainStats, InterfaceStats};
use crate::render::table::tests::row;
use crate::snapshot::telemetry::{DomainTelemetry, Families, Telemetry};
use crate::snapshot::{AgentStatus, OsAnswer, Snapshot, VmRow};

/// Counters of one VM in one sample: CPU ns, disk read/write bytes, net rx/tx bytes.
#[derive(Clone, Copy)]
struct C {
    cpu: u64,
    rd: u64,
    wr: u64,
    rx: u64,
    tx: u64,
}

fn vm(name: &str, uuid: &str, state: DomainState) -> VmRow {
    let mut r = row(name, Some("Ubuntu 24.04 LTS"), 1 << 20, 1 << 20, 0.0);
    r.uuid = uuid.into();
    r.state = state;
    r.vcpus = 2;
    r
}

fn stats(name: &str, c: C, nic: bool, balloon: bool) -> DomainStats {
    DomainStats {
        name: name.into(),
        state: Some(DomainState::Running),
        cpu_time_ns: Some(c.cpu),
        balloon: if balloon {
            BalloonStats {
                available_kib: Some(1 << 20),
                usable_kib: Some(1 << 19),
                ..BalloonStats::default()
            }
        } else {
            BalloonStats::default()
        },
        blocks: vec![BlockStats {
            name: "vda".into(),
            rd_bytes: Some(c.rd),
            wr_bytes: Some(c.wr),
            ..BlockStats::default()
        }],
        interfaces: if nic {
            vec![InterfaceStats {
                name: "vnet0".into(),
                rx_bytes: Some(c.rx),
                tx_bytes: Some(c.tx),
                ..InterfaceStats::default()
            }]
        } else {
            vec![]
        },
        ..DomainStats::default()
    }
}

/// A host of five VMs: web (busy, NIC, balloon), db (no NIC, no balloon), a paused
/// one, a shut-off one holding an ISO, and one whose name and OS carry escape codes.
fn sample(at: Instant, secs: u64, c: C) -> Sample {
    let mut web = vm("web01", "u-web", DomainState::Running);
    web.media = vec![CdromDrive {
        target: "sda".into(),
        bus: Some("sata".into()),
        source: Some("/isos/debian.iso".into()),
        readonly: true,
    }];
    let db = vm("db01", "u-db", DomainState::Running);
    let mut paused = vm("frozen", "u-paused", DomainState::Paused);
    paused.os = OsAnswer::unknown("VM paused");
    paused.agent = AgentStatus::NotAsked;
    let mut off = vm("win2k22", "u-off", DomainState::ShutOff);
    off.media = vec![CdromDrive {
        target: "hdc".into(),
        bus: None,
        source: Some("/isos/virtio-win.iso".into()),
        readonly: true,
    }];
    let mut evil = vm("evil\u{1b}[31m", "u-evil", DomainState::Running);
    evil.os = OsAnswer::known(
        "Pwn\u{1b}]0;title\u{7}OS".into(),
        None,
        crate::snapshot::OsSource::GuestExec,
    );
    evil.agent = AgentStatus::Ok;
    let mut noagent = vm("noagent", "u-noagent", DomainState::Running);
    noagent.os = OsAnswer::unknown("agent not connected");
    noagent.agent = AgentStatus::Absent;
    let zero = C {
        cpu: 0,
        rd: 0,
        wr: 0,
        rx: 0,
        tx: 0,
    };
    let tel = |s: Option<DomainStats>, nic: bool| DomainTelemetry {
        stats: s,
        stats_error: None,
        disks: vec![],
        interfaces: if nic {
            vec![InterfaceFacts {
                target: "vnet0".into(),
                mac: "52:54:00:00:00:01".into(),
                model: "virtio".into(),
                interface_type: "network".into(),
                ..InterfaceFacts::default()
            }]
        } else {
            vec![]
        },
    };
    let vms = vec![
        db.clone(),
        evil.clone(),
        paused.clone(),
        noagent.clone(),
        off,
        web,
    ];
    let domains = vec![
        tel(
            Some(stats(
                "db01",
                C {
                    cpu: c.cpu / 4,
                    ..c
                },
                false,
                false,
            )),
            false,
        ),
        tel(Some(stats("evil", zero, false, false)), false),
        tel(Some(stats("frozen", zero, false, false)), false),
        tel(Some(stats("noagent", zero, false, false)), false),
        tel(None, false),
        tel(Some(stats("web01", c, true, true)), true),
    ];
    Sample {
        at: at + Duration::from_secs(secs),
        unix: 1_700_000_000.0 + secs as f64,
        snapshot: Snapshot {
            uri: "qemu:///system".into(),
            taken_at: 0,
            duration_ms: 12,
            vms,
            errors: vec![],
            telemetry: Some(Telemetry {
                families: Families::ALL,
                domains,
            }),
        },
        host_cpus: Some(4),
    }
}

fn two_samples() -> (Sample, Sample) {
    let t0 = Instant::now();
    let a = sample(
        t0,
        0,
        C {
            cpu: 10_000_000_000,
            rd: 1000,
            wr: 0,
            rx: 0,
            tx: 0,
        },
    );
    // 2 s later: web used 1 s of CPU (of 2 vCPUs: 25 %), read 2 MiB, received 4 KiB.
    let b = sample(
        t0,
        2,
        C {
            cpu: 11_000_000_000,
            rd: 1000 + 2 * 1024 * 1024,
            wr: 2048,
            rx: 4096,
            tx: 1024,
        },
    );
    (a, b)
}

fn ui_with_samples(color: bool) -> Ui {
    let (a, b) = two_samples();
    let mut ui = Ui::new("qemu:///system".into(), 2.0, color);
    ui.take(a);
    ui.take(b);
    ui
}

fn screen(ui: &mut Ui, w: u16, h: u16) -> (Vec<String>, ratatui::buffer::Buffer) {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| view::draw(f, ui)).unwrap();
    let buf = term.backend().buffer().clone();
    let lines = (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect();
    (lines, buf)
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn line_of<'a>(ui: &'a Ui, name: &str) -> &'a model::Line {
    ui.shown.iter().find(|l| l.row.name == name).unwrap()
}

#[test]
fn rates_come_from_counter_deltas_over_the_collectors_clock() {
    let ui = ui_with_samples(false);
    let web = line_of(&ui, "web01");
    assert!(
        (web.cpu_pct.unwrap() - 25.0).abs() < 1e-9,
        "{:?}",
        web.cpu_pct
    );
    assert!(
        (web.host_pct.unwrap() - 12.5).abs() < 1e-9,
        "{:?}",
        web.host_pct
    );
    assert_eq!(web.rd_bps, Ok(1024.0 * 1024.0));
    assert_eq!(web.wr_bps, Ok(1024.0));
    assert_eq!(web.rx_bps, Ok(2048.0));
    assert_eq!(web.tx_bps, Ok(512.0));
    assert_eq!(web.mem_used_kib, Ok(1 << 19));
    let db = line_of(&ui, "db01");
    assert_eq!(db.rx_bps, Err(Why::NoNic));
    assert_eq!(db.mem_used_kib, Err(Why::NoBalloon));
    let off = line_of(&ui, "win2k22");
    assert_eq!(off.cpu_pct, Err(Why::NotRunning));
    assert_eq!(off.rd_bps, Err(Why::NotRunning));
    let paused = line_of(&ui, "frozen");
    assert_eq!(paused.mem_used_kib, Err(Why::Paused));
    assert_eq!(paused.os_why, Some(Why::Paused));
    assert_eq!(line_of(&ui, "noagent").os_why, Some(Why::NoAgent));
}

#[test]
fn one_sample_has_no_rates_and_a_restarted_counter_none_either() {
    let (a, mut b) = two_samples();
    let first = model::lines(None, &a, None);
    let web = first.iter().find(|l| l.row.name == "web01").unwrap();
    assert_eq!(web.cpu_pct, Err(Why::FirstSample));
    assert_eq!(web.rd_bps, Err(Why::FirstSample));
    // The VM restarted between the samples: its counters went back.
    let t = b.snapshot.telemetry.as_mut().unwrap();
    t.domains[5].stats.as_mut().unwrap().blocks[0].rd_bytes = Some(1);
    b.host_cpus = None;
    let l = model::lines(Some(&a), &b, None);
    let web = l.iter().find(|l| l.row.name == "web01").unwrap();
    assert_eq!(web.rd_bps, Err(Why::FirstSample));
    assert_eq!(web.host_pct, Err(Why::HostCpusUnknown));
}

#[test]
fn a_vm_libvirt_skipped_as_busy_says_so_instead_of_no_stats() {
    let (a, mut b) = two_samples();
    // What NOWAIT gives while another job holds the VM: the drive named, no counters,
    // no balloon figures; the CPU time and the tap's counters need no job.
    let t = b.snapshot.telemetry.as_mut().unwrap();
    let web = t
        .domains
        .iter_mut()
        .filter_map(|d| d.stats.as_mut())
        .find(|s| s.name == "web01")
        .unwrap();
    web.blocks[0] = BlockStats {
        name: "vda".into(),
        path: Some("/img/web.qcow2".into()),
        ..BlockStats::default()
    };
    web.balloon = BalloonStats::default();
    let l = model::lines(Some(&a), &b, None);
    let web = l.iter().find(|l| l.row.name == "web01").unwrap();
    assert_eq!(web.rd_bps, Err(Why::Busy));
    assert_eq!(web.wr_bps, Err(Why::Busy));
    assert_eq!(web.mem_used_kib, Err(Why::Busy));
    assert_eq!(web.disks[0].a_bps, Err(Why::Busy));
    assert!(web.rx_bps.is_ok(), "{:?}", web.rx_bps);
    assert!(web.cpu_pct.is_ok(), "{:?}", web.cpu_pct);
    // A VM without balloon figures and not busy still says why it has none.
    let db = l.iter().find(|l| l.row.name == "db01").unwrap();
    assert_eq!(db.mem_used_kib, Err(Why::NoBalloon));
    assert_eq!(Why::Busy.key(), "vm-busy");
}

#[test]
fn the_80x24_screen_keeps_the_important_columns_and_explains_every_dash() {
    let mut ui = ui_with_samples(false);
    let (lines, _) = screen(&mut ui, 80, 24);
    let text = lines.join("\n");
    assert!(lines.iter().all(|l| l.chars().count() == 80));
    let header = &lines[1];
    for h in ["VM", "CPU%", "STATE", "MEM USE/MAX", "OS", "ISO"] {
        assert!(header.contains(h), "{h} missing from {header:?}");
    }
    assert!(
        !header.contains("HOST%"),
        "HOST% fits only wider: {header:?}"
    );
    // Sorted by CPU, busiest first.
    assert!(lines[2].contains("web01"), "{text}");
    assert!(lines[2].contains("25.0"), "{text}");
    assert!(lines[2].contains("512M/1.0G"), "{text}");
    assert!(lines[2].contains("/isos/debian…"), "{text}");
    assert!(lines[23].contains("E edit"), "{text}");
    let legend = lines[21..23].join(" ");
    for why in [
        "not running (1)",
        "paused (1)",
        "no balloon driver (3)",
        "no agent (1)",
    ] {
        assert!(
            legend.contains(why),
            "{why} missing from the legend {legend:?}"
        );
    }
    assert!(lines[23].contains("q quit"), "{text}");
    // Guest strings are escaped: no raw ESC or BEL reaches the buffer.
    assert!(
        text.contains("evil\\x1b[3…") && text.contains("Pwn\\x1b]0;…"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'));
}

#[test]
fn the_200x50_screen_shows_every_column() {
    let mut ui = ui_with_samples(true);
    let (lines, buf) = screen(&mut ui, 200, 50);
    let header = &lines[1];
    for c in Column::ALL {
        assert!(
            header.contains(c.header()),
            "{} missing: {header:?}",
            c.header()
        );
    }
    let web = lines.iter().find(|l| l.contains("web01")).unwrap();
    assert!(
        web.contains("1.0M") && web.contains("2.0K") && web.contains("12.5"),
        "{web}"
    );
    // Colour is on: the header cell has a foreground colour.
    assert_ne!(buf[(0, 1)].fg, ratatui::style::Color::Reset);
    assert!(lines.iter().skip(8).take(40).all(|l| l.trim().is_empty()));
}

#[test]
fn no_color_means_no_colour_anywhere() {
    let mut ui = ui_with_samples(false);
    let (_, buf) = screen(&mut ui, 200, 50);
    for c in buf.content() {
        assert_eq!(c.fg, ratatui::style::Color::Reset);
        assert_eq!(c.bg, ratatui::style::Color::Reset);
    }
}

#[test]
fn columns_drop_by_priority_and_fill_the_width() {
    for w in [40u16, 60, 80, 100, 120, 200] {
        let cols = view::layout(w, false);
        let used: u16 = cols.iter().map(|c| c.1).sum::<u16>() + cols.len() as u16 - 1;
        assert!(used <= w, "{w}: {used}");
        assert_eq!(cols[0].0, Column::Vm);
    }
    let at80: Vec<Column> = view::layout(80, false).iter().map(|c| c.0).collect();
    assert!(at80.contains(&Column::Cpu) && at80.contains(&Column::Iso));
    assert!(!at80.contains(&Column::Host));
    assert_eq!(view::layout(200, false).len(), 12);
}

#[test]
fn keys_sort_filter_navigate_and_quit() {
    let mut ui = ui_with_samples(false);
    assert_eq!(ui.shown[0].row.name, "web01");
    ui.key(key('1')); // sort by VM, A to Z
    assert_eq!(ui.sort, Column::Vm);
    assert_eq!(ui.shown[0].row.name, "db01");
    ui.key(key('1')); // again: reversed
    assert_eq!(ui.shown[0].row.name, "win2k22");
    ui.key(key('r'));
    assert_eq!(ui.shown[0].row.name, "db01");
    ui.key(code(KeyCode::End));
    assert_eq!(ui.selected_line().unwrap().row.name, "win2k22");
    ui.key(code(KeyCode::Home));
    ui.key(code(KeyCode::Down));
    assert_eq!(ui.selected_line().unwrap().row.name, "evil\u{1b}[31m");
    // A new sample keeps the selection on the same VM.
    let (_, b) = two_samples();
    ui.take(b);
    assert_eq!(ui.selected_line().unwrap().row.name, "evil\u{1b}[31m");
    ui.key(key('/'));
    for c in "WIN".chars() {
        ui.key(key(c));
    }
    let names: Vec<&str> = ui.shown.iter().map(|l| l.row.name.as_str()).collect();
    assert_eq!(
        names,
        ["win2k22"],
        "the filter matches names, OS, state and ISO"
    );
    ui.key(code(KeyCode::Enter));
    assert_eq!(ui.mode, Mode::Table);
    assert_eq!(ui.filter, "WIN");
    ui.key(key('/'));
    ui.key(code(KeyCode::Esc));
    assert_eq!(ui.shown.len(), 6);
    ui.key(key('>'));
    assert_eq!(ui.sort, Column::Os);
    assert_eq!(ui.key(key('q')), Action::Quit);
    assert_eq!(
        ui.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
}

#[test]
fn eject_asks_first_and_mount_and_edit_ask_for_a_path() {
    let mut ui = ui_with_samples(false);
    ui.key(code(KeyCode::Home));
    assert_eq!(ui.selected_line().unwrap().row.name, "web01");
    assert_eq!(ui.key(key('e')), Action::None);
    assert!(matches!(ui.mode, Mode::ConfirmEject { .. }));
    let (lines, _) = screen(&mut ui, 80, 24);
    assert!(lines
        .join("\n")
        .contains("Dismount /isos/debian.iso from web01?"));
    assert_eq!(ui.key(key('n')), Action::None);
    assert_eq!(ui.message.as_deref(), Some("dismount cancelled"));
    ui.key(key('e'));
    assert_eq!(ui.key(key('y')), Action::Eject { vm: "web01".into() });
    assert!(ui.busy.is_some());
    ui.done("web01: sda ejected /isos/debian.iso (live and config)".into());
    let (lines, _) = screen(&mut ui, 80, 24);
    assert!(lines[23].contains("ejected /isos/debian.iso"), "{lines:?}");
    // A VM without a disc gets a line, no question.
    ui.key(key('1'));
    ui.key(code(KeyCode::Home));
    assert_eq!(ui.key(key('e')), Action::None);
    assert_eq!(ui.message.as_deref(), Some("db01: no disc in any drive"));
    assert_eq!(ui.key(key('m')), Action::ListIsos { vm: "db01".into() });
    ui.pick_iso("db01".into(), vec!["/pool/a.iso".into()]);
    ui.key(code(KeyCode::Down));
    ui.key(code(KeyCode::Enter)); // "Type a path…"
    for c in "/tmp/x.iso".chars() {
        ui.key(key(c));
    }
    assert_eq!(
        ui.key(code(KeyCode::Enter)),
        Action::Mount {
            vm: "db01".into(),
            iso: "/tmp/x.iso".into()
        }
    );
    ui.done("done".into());
    ui.key(key('E'));
    for c in "/etc/hosts".chars() {
        ui.key(key(c));
    }
    assert_eq!(
        ui.key(code(KeyCode::Enter)),
        Action::Edit {
            vm: "db01".into(),
            path: "/etc/hosts".into()
        }
    );
}

#[test]
fn details_show_drives_devices_and_sparklines() {
    let mut ui = ui_with_samples(false);
    ui.key(code(KeyCode::Home));
    ui.key(code(KeyCode::Enter));
    assert_eq!(ui.mode, Mode::Details);
    let (lines, _) = screen(&mut ui, 80, 24);
    let text = lines.join("\n");
    for s in [
        "web01",
        "/isos/debian.iso",
        "vda",
        "vnet0",
        "52:54:00:00:00:01",
        "CPU% (last",
        "network, now 2.5K/s",
    ] {
        assert!(text.contains(s), "{s} missing:\n{text}");
    }
    // The sparkline rows carry bars.
    assert!(text.chars().any(|c| ('▁'..='█').contains(&c)), "{text}");
    ui.key(code(KeyCode::Esc));
    assert_eq!(ui.mode, Mode::Table);
    ui.key(key('?'));
    let (lines, _) = screen(&mut ui, 80, 24);
    assert!(lines.join("\n").contains("dismount the VM's disc"));
}

#[test]
fn batch_records_follow_the_schema() {
    let (a, b) = two_samples();
    let lines = model::lines(Some(&a), &b, None);
    let mut csv = Vec::new();
    batch::write_header(&mut csv, Format::Csv, false).unwrap();
    batch::write_records(&mut csv, Format::Csv, b.unix, 1, &lines).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], FIELDS.join(","));
    assert_eq!(rows.len(), 7);
    let web = rows.iter().find(|r| r.contains("web01")).unwrap();
    assert!(
        web.contains(",25.0,12.5,524288,1048576,1048576,1024,2048,512,/isos/debian.iso,"),
        "{web}"
    );
    assert!(!csv.contains('\u{1b}'));
    let db = rows.iter().find(|r| r.contains("db01")).unwrap();
    assert!(
        db.ends_with(",mem_used_kib=no-balloon;net_rx_bps=no-nic;net_tx_bps=no-nic"),
        "{db}"
    );

    let mut jl = Vec::new();
    batch::write_records(&mut jl, Format::Jsonl, b.unix, 3, &lines).unwrap();
    let text = String::from_utf8(jl).unwrap();
    assert!(!text.contains('\u{1b}'));
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["iteration"], 3);
        for f in FIELDS {
            assert!(v.get(f).is_some(), "{f} missing in {line}");
        }
        if v["vm"] == "web01" {
            assert_eq!(v["cpu_pct"], 25.0);
            assert_eq!(v["disk_read_bps"], 1_048_576);
            assert_eq!(v["iso"], serde_json::json!(["/isos/debian.iso"]));
            assert_eq!(v["missing"], serde_json::json!({}));
        }
        if v["vm"] == "win2k22" {
            assert_eq!(v["state"], "shut_off");
            assert_eq!(v["cpu_pct"], serde_json::Value::Null);
            assert_eq!(v["missing"]["cpu_pct"], "not-running");
        }
        if v["vm"] == "evil\u{1b}[31m" {
            assert!(line.contains("\\u001b"), "{line}");
        }
    }
}

/// Two hosts that hold the same VMs (two names for one daemon share UUIDs): each host's
/// samples come on their own; the second host's scan fails after its first sample.
fn two_hosts() -> Ui {
    let names = ["kvm1".to_string(), "kvm2".to_string()];
    let mut ui = Ui::of_hosts("2 hosts".into(), &names, 2.0, false);
    let (a, b) = two_samples();
    ui.take_from(0, a.clone());
    ui.take_from(1, a);
    ui.take_from(0, b);
    ui.failed(
        1,
        "cannot reach libvirt at qemu+ssh://kvm2/system: gone".into(),
    );
    ui
}

#[test]
fn several_hosts_keep_their_vms_apart_and_name_the_host() {
    let mut ui = two_hosts();
    assert!(ui.several());
    let webs: Vec<&model::Line> = ui.shown.iter().filter(|l| l.row.name == "web01").collect();
    assert_eq!(webs.len(), 2, "one web01 per host");
    let labels: Vec<String> = webs.iter().map(|l| l.label()).collect();
    assert!(labels.contains(&"kvm1:web01".to_string()), "{labels:?}");
    assert!(labels.contains(&"kvm2:web01".to_string()), "{labels:?}");
    assert_ne!(webs[0].key(), webs[1].key(), "same UUID, different keys");
    // kvm1 has two samples, so rates; kvm2 has one.
    let on = |h: &str| {
        ui.shown
            .iter()
            .find(|l| l.label() == format!("{h}:web01"))
            .unwrap()
    };
    assert!(on("kvm1").cpu_pct.is_ok());
    assert_eq!(on("kvm2").cpu_pct, Err(Why::FirstSample));
    // Each host's history has its own points: one for kvm2, two for kvm1.
    assert_eq!(ui.history.of(&on("kvm1").key()).map(|q| q.len()), Some(2));
    assert_eq!(ui.history.of(&on("kvm2").key()).map(|q| q.len()), Some(1));

    // The table: HOST first, the failing host on the status line.
    let (lines, _) = screen(&mut ui, 120, 24);
    let text = lines.join("\n");
    assert!(lines[0].contains("2 hosts"), "{text}");
    let header = &lines[1];
    assert!(
        header.starts_with("HOST "),
        "the host's column first: {header}"
    );
    assert!(text.contains("kvm2"), "{text}");
    let err = lines
        .iter()
        .position(|l| l.starts_with("host kvm2: cannot reach libvirt"))
        .unwrap_or_else(|| panic!("the failing host's own line: {text}"));
    assert!(
        lines[err + 1].starts_with("- :"),
        "above the legend: {text}"
    );
    assert!(
        lines[23].contains("q quit"),
        "the status line stays free: {text}"
    );

    // Sorting by host, filtering by host, and the actions name HOST:VM.
    ui.sort_by(Column::parse("hostname").unwrap());
    assert_eq!(ui.shown[0].host.as_deref(), Some("kvm1"));
    ui.filter = "kvm2".into();
    ui.refresh();
    assert!(ui.shown.iter().all(|l| l.host.as_deref() == Some("kvm2")));
    ui.filter = "kvm2:".into();
    ui.refresh();
    assert!(ui.shown.is_empty(), "the filter looks at each field alone");
    ui.filter = "web01".into();
    ui.refresh();
    let first = ui.shown[0].label();
    ui.key(key('e'));
    assert_eq!(
        ui.mode,
        Mode::ConfirmEject {
            vm: first.clone(),
            discs: "/isos/debian.iso".into()
        }
    );
    assert_eq!(ui.key(key('y')), Action::Eject { vm: first });
}

#[test]
fn several_hosts_records_carry_the_host_first() {
    let ui = two_hosts();
    let lines: Vec<model::Line> = ui.shown.clone();
    let mut csv = Vec::new();
    batch::write_header(&mut csv, Format::Csv, true).unwrap();
    batch::write_records(&mut csv, Format::Csv, 1.0, 1, &lines).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("host,time,iteration,vm,"));
    assert!(
        rows.all(|r| r.starts_with("kvm1,") || r.starts_with("kvm2,")),
        "{csv}"
    );
    let rec = batch::record(1.0, 1, &lines[0]);
    assert!(rec["host"] == "kvm1" || rec["host"] == "kvm2", "{rec:?}");
    assert_eq!(rec.len(), FIELDS.len() + 1);
}
