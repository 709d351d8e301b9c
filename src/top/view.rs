//! Drawing the screen from the [`Ui`] state (ratatui): the header, the table with its
//! columns dropped by priority to fit, the legend of every `-`, the status line, and the
//! details, help and question windows. Every string from a guest or libvirt is escaped
//! ([`sanitize`]) before it reaches a cell.

use std::collections::BTreeMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use super::model::{self, Column, Fig, Line, Sample, Why};
use super::state::{Mode, Purpose, Ui};
use crate::hypervisor::DomainState;
use crate::render::text::{sanitize, truncate, width};
use crate::units::memory_kib;

/// (column, narrowest, widest) in the order columns are kept when space runs out. The
/// host's name is kept right after the VM's, and only with several hosts.
const PRIORITY: [(Column, u16, u16); 13] = [
    (Column::Vm, 10, 28),
    (Column::HostName, 6, 16),
    (Column::Cpu, 5, 5),
    (Column::State, 8, 8),
    (Column::Mem, 12, 12),
    (Column::Os, 10, 32),
    (Column::Iso, 12, 48),
    (Column::Read, 6, 8),
    (Column::Write, 6, 8),
    (Column::Rx, 6, 8),
    (Column::Tx, 6, 8),
    (Column::Agent, 9, 9),
    (Column::Host, 6, 6),
];

/// The columns that fit in `total` cells (one cell between columns), in table order,
/// each with its width: columns are taken by priority while they fit, and what is left
/// widens the text columns. `hosts`: the HOST column is wanted (several hosts).
pub fn layout(total: u16, hosts: bool) -> Vec<(Column, u16)> {
    let mut used: u16 = 0;
    let mut kept: Vec<(Column, u16, u16)> = Vec::new();
    for (c, min, max) in PRIORITY {
        if c == Column::HostName && !hosts {
            continue;
        }
        let need = min + u16::from(!kept.is_empty());
        if used + need <= total {
            used += need;
            kept.push((c, min, max));
        }
    }
    let mut spare = total.saturating_sub(used);
    while spare > 0 {
        let mut grew = false;
        for k in kept.iter_mut() {
            if spare > 0 && k.1 < k.2 {
                k.1 += 1;
                spare -= 1;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut out: Vec<(Column, u16)> = kept.into_iter().map(|(c, w, _)| (c, w)).collect();
    out.sort_by_key(|(c, _)| c.position());
    out
}

/// Bytes per second, short: `0`, `512`, `1.5K`, `12K`, `3.4M`, `1.0G`.
pub fn rate_text(bps: f64) -> String {
    let units = ["", "K", "M", "G", "T"];
    let mut v = bps.max(0.0);
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.1}{}", units[u])
    } else {
        format!("{v:.0}{}", units[u])
    }
}

/// KiB, short: `512K`, `412M`, `1.0G`, `16G`.
pub fn kib_text(kib: u64) -> String {
    rate_text(kib as f64 * 1024.0)
}

fn fig_text<T: Copy>(f: &Fig<T>, show: impl Fn(T) -> String) -> String {
    match f {
        Ok(v) => show(*v),
        Err(_) => "-".to_string(),
    }
}

/// The text of one cell, escaped, and why it is `-` when it is.
pub fn cell_text(l: &Line, c: Column) -> (String, Option<Why>) {
    let why = |f: Result<(), Why>| f.err();
    match c {
        Column::Vm => (sanitize(&l.row.name), None),
        Column::HostName => (sanitize(l.host.as_deref().unwrap_or("-")), None),
        Column::Os => match &l.row.os.text {
            Some(t) => (sanitize(t), None),
            None => ("-".into(), l.os_why),
        },
        Column::State => (l.row.state.as_str().to_string(), None),
        Column::Cpu => (
            fig_text(&l.cpu_pct, |v| format!("{v:.1}")),
            why(l.cpu_pct.map(|_| ())),
        ),
        Column::Host => (
            fig_text(&l.host_pct, |v| format!("{v:.1}")),
            why(l.host_pct.map(|_| ())),
        ),
        Column::Mem => {
            let max = kib_text(l.row.memory_max_kib);
            match l.mem_used_kib {
                Ok(u) => (format!("{}/{max}", kib_text(u)), None),
                Err(w) => (format!("-/{max}"), Some(w)),
            }
        }
        Column::Read => (fig_text(&l.rd_bps, rate_text), why(l.rd_bps.map(|_| ()))),
        Column::Write => (fig_text(&l.wr_bps, rate_text), why(l.wr_bps.map(|_| ()))),
        Column::Rx => (fig_text(&l.rx_bps, rate_text), why(l.rx_bps.map(|_| ()))),
        Column::Tx => (fig_text(&l.tx_bps, rate_text), why(l.tx_bps.map(|_| ()))),
        Column::Agent => (l.row.agent.as_str().to_string(), None),
        Column::Iso => {
            if l.row.media_error.is_some() {
                ("?".into(), Some(Why::XmlUnknown))
            } else {
                (sanitize(&model::iso_text(&l.row)), None)
            }
        }
    }
}

struct Styles {
    header: Style,
    dim: Style,
    selected: Style,
    running: Style,
    paused: Style,
    warn: Style,
}

impl Styles {
    fn new(color: bool) -> Styles {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        if !color {
            return Styles {
                header: bold,
                dim: Style::default(),
                selected: Style::default().add_modifier(Modifier::REVERSED),
                running: Style::default(),
                paused: Style::default(),
                warn: bold,
            };
        }
        Styles {
            header: bold.fg(Color::Cyan),
            dim: Style::default().fg(Color::DarkGray),
            selected: Style::default().add_modifier(Modifier::REVERSED),
            running: Style::default().fg(Color::Green),
            paused: Style::default().fg(Color::Yellow),
            warn: bold.fg(Color::Red),
        }
    }

    fn state(&self, s: DomainState) -> Style {
        match s {
            DomainState::Running => self.running,
            DomainState::Paused | DomainState::PmSuspended => self.paused,
            DomainState::Crashed => self.warn,
            _ => self.dim,
        }
    }
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, ui: &mut Ui) {
    let area = f.area();
    let st = Styles::new(ui.color);
    if ui.mode == Mode::Help {
        draw_help(f, area, &st);
        return;
    }
    if ui.mode == Mode::Details {
        if let Some(l) = ui.selected_line().cloned() {
            draw_details(f, area, ui, &l, &st);
            return;
        }
    }
    // The legend wraps onto up to three lines rather than lose a reason.
    let legend_line = legend_text(&ui.shown);
    let legend_rows = (width(&legend_line) as u16)
        .div_ceil(area.width.max(1))
        .clamp(1, 3);
    // With several hosts, each failing host has a line of its own above the legend, so
    // that a host down for good never hides the result lines on the status line.
    let failing = if ui.several() {
        host_errors(ui, 3)
    } else {
        Vec::new()
    };
    let [head, table, errors, legend, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(2),
        Constraint::Length(failing.len() as u16),
        Constraint::Length(legend_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header_text(ui)).style(st.header), head);
    draw_table(f, table, ui, &st);
    f.render_widget(Paragraph::new(failing.join("\n")).style(st.warn), errors);
    f.render_widget(
        Paragraph::new(legend_line)
            .wrap(Wrap { trim: false })
            .style(st.dim),
        legend,
    );
    let (text, style) = status_text(ui, &st);
    f.render_widget(Paragraph::new(text).style(style), status);
    match ui.mode.clone() {
        Mode::ConfirmEject { vm, discs } => {
            let text = format!(
                "Dismount {} from {}?\nIt is unmounted inside the guest first, then ejected.\n\n  y: dismount    any other key: cancel",
                sanitize(&discs),
                sanitize(&vm)
            );
            popup(f, area, " Dismount ", &text, &st);
        }
        Mode::Input { purpose, text } => {
            let (title, prompt) = match &purpose {
                Purpose::Filter => (
                    " Filter ".to_string(),
                    "name, OS, state, ISO or host contains:",
                ),
                Purpose::MountPath { vm } => (
                    format!(" Mount into {} ", sanitize(vm)),
                    "ISO path (Enter: mount, Esc: cancel):",
                ),
                Purpose::EditPath { vm } => (
                    format!(" Edit a file in {} ", sanitize(vm)),
                    "Path inside the guest (Enter: edit, Esc: cancel):",
                ),
            };
            let body = format!("{prompt}\n> {}_", sanitize(&text));
            popup(f, area, &title, &body, &st);
        }
        Mode::PickIso {
            vm,
            items,
            selected,
        } => {
            let mut body = String::from("Which ISO? (Enter: mount, Esc: cancel)\n");
            let room = area.height.saturating_sub(6) as usize;
            let start = selected.saturating_sub(room.saturating_sub(1));
            for (i, it) in items.iter().enumerate().skip(start).take(room.max(1)) {
                let mark = if i == selected { "> " } else { "  " };
                body.push_str(&format!("{mark}{}\n", sanitize(it)));
            }
            popup(
                f,
                area,
                &format!(" Mount into {} ", sanitize(&vm)),
                &body,
                &st,
            );
        }
        _ => {}
    }
}

fn header_text(ui: &Ui) -> String {
    let running = ui
        .shown
        .iter()
        .filter(|l| l.row.state == DomainState::Running)
        .count();
    // With several hosts: the stalest host's age and the slowest host's scan.
    let samples: Vec<&Sample> = ui.feeds.iter().filter_map(|f| f.last.as_ref()).collect();
    let age = match (
        samples.iter().map(|s| s.at.elapsed()).max(),
        samples.iter().map(|s| s.snapshot.duration_ms).max(),
    ) {
        (Some(age), Some(ms)) => {
            format!("updated {:.1} s ago (scan {ms} ms)", age.as_secs_f64())
        }
        _ => "waiting for the first scan…".to_string(),
    };
    let arrow = if ui.reverse ^ ui.sort.numeric() {
        "▼"
    } else {
        "▲"
    };
    let mut t = format!(
        "top  {} VMs, {running} running  sort {} {arrow}",
        ui.shown.len(),
        ui.sort.header(),
    );
    if !ui.filter.is_empty() {
        t.push_str(&format!("  filter \"{}\"", sanitize(&ui.filter)));
    }
    t.push_str(&format!(
        "  every {} s  {age}  {}",
        ui.interval_secs,
        sanitize(&ui.title)
    ));
    t
}

fn draw_table(f: &mut Frame, area: Rect, ui: &mut Ui, st: &Styles) {
    let cols = layout(area.width, ui.several());
    ui.page = area.height.saturating_sub(1).max(1) as usize;
    // Keep the selection in view at this height.
    if let Some(i) = ui.selected_index() {
        if i >= ui.offset + ui.page {
            ui.offset = i + 1 - ui.page;
        } else if i < ui.offset {
            ui.offset = i;
        }
    }
    let header = Row::new(cols.iter().map(|(c, _)| {
        let mut h = c.header().to_string();
        if *c == ui.sort {
            h.push(if ui.reverse ^ c.numeric() {
                '▼'
            } else {
                '▲'
            });
        }
        Cell::from(h)
    }))
    .style(st.header);
    let selected = ui.selected_index();
    let rows = ui
        .shown
        .iter()
        .enumerate()
        .skip(ui.offset)
        .take(ui.page)
        .map(|(i, l)| {
            let cells = cols.iter().map(|(c, w)| {
                let (text, why) = cell_text(l, *c);
                let text = truncate(&text, *w as usize);
                let style = match (c, why) {
                    (Column::State, _) => st.state(l.row.state),
                    (_, Some(_)) => st.dim,
                    _ => Style::default(),
                };
                let right = c.numeric();
                let text = if right {
                    format!("{text:>w$}", w = (*w as usize).saturating_sub(0))
                } else {
                    text
                };
                Cell::from(Span::styled(text, style))
            });
            let row = Row::new(cells);
            if Some(i) == selected {
                row.style(st.selected)
            } else {
                row
            }
        });
    let widths: Vec<Constraint> = cols.iter().map(|(_, w)| Constraint::Length(*w)).collect();
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    f.render_widget(table, area);
    if ui.shown.is_empty() {
        let msg = if ui.feeds.iter().all(|f| f.last.is_none()) {
            "scanning…"
        } else if ui.filter.is_empty() {
            if ui.several() {
                "no VMs on these hosts"
            } else {
                "no VMs on this connection"
            }
        } else {
            "no VM matches the filter (/ to change it, Esc in it to clear)"
        };
        let r = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new(msg), r);
    }
}

/// The legend: every reason a shown cell is `-`, with how many VMs it is about.
pub fn legend_text(lines: &[Line]) -> String {
    let mut why: BTreeMap<Why, usize> = BTreeMap::new();
    for l in lines {
        let mut seen = Vec::new();
        for c in Column::ALL {
            if let (_, Some(w)) = cell_text(l, c) {
                if !seen.contains(&w) {
                    seen.push(w);
                }
            }
        }
        for w in seen {
            *why.entry(w).or_default() += 1;
        }
    }
    if why.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = why
        .iter()
        .map(|(w, n)| format!("{} ({n})", w.text()))
        .collect();
    format!("- : {}", parts.join(" · "))
}

/// A line for each host whose newest scan failed (or that could not be opened), at most
/// `max` (the last one then says how many more there are).
fn host_errors(ui: &Ui, max: usize) -> Vec<String> {
    let failing: Vec<String> = ui
        .feeds
        .iter()
        .filter_map(|f| {
            let e = f.error.as_deref()?;
            Some(sanitize(&format!(
                "host {}: {e}",
                f.name.as_deref().unwrap_or("?")
            )))
        })
        .collect();
    if failing.len() <= max {
        return failing;
    }
    let mut shown = failing[..max - 1].to_vec();
    shown.push(format!(
        "and {} more hosts failing",
        failing.len() - (max - 1)
    ));
    shown
}

fn status_text(ui: &Ui, st: &Styles) -> (String, Style) {
    if let Some(b) = &ui.busy {
        return (sanitize(b), st.header);
    }
    if !ui.several() {
        if let Some(e) = ui.feeds.iter().find_map(|f| f.error.as_deref()) {
            return (format!("libvirt: {}", sanitize(e)), st.warn);
        }
    }
    if let Some(m) = &ui.message {
        return (sanitize(m), Style::default());
    }
    (
        "q quit  ? help  / filter  < > sort  Enter details  e eject  m mount  E edit".to_string(),
        st.dim,
    )
}

fn popup(f: &mut Frame, area: Rect, title: &str, body: &str, st: &Styles) {
    let lines = body.lines().count() as u16 + 2;
    let w = body
        .lines()
        .map(|l| width(l) as u16)
        .max()
        .unwrap_or(20)
        .max(width(title) as u16)
        .saturating_add(4)
        .min(area.width);
    let h = lines.min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title.to_string())
        .border_style(st.header);
    f.render_widget(Paragraph::new(body.to_string()).block(block), r);
}

/// The keys, as `?` shows them (and the README lists them).
pub const HELP: &str = "\
Keys
  Up/Down, j/k     move          PgUp/PgDn, Home/End   page, first, last
  < >              sort by the column left/right of the current one
  1-9 0 - =        sort by column 1..12 (again: reverse)    r  reverse
  /                filter (name, OS, state, ISO); Esc in it clears
  Enter            details of the VM: drives, disks, interfaces, sparklines
  e                dismount the VM's disc (asks first)
  m                mount an ISO: a pool volume or a typed path
  E                edit a file in the VM with your editor
  ?                this help       q, Esc, Ctrl-C   quit (Esc/q close a window)

Columns
  CPU%   of the VM's own vCPUs     HOST%  of the host's CPUs
  MEM    used (the guest's balloon figures) / maximum
  RD/WR  disk bytes read/written per second; RX/TX network bytes per second
  -      no figure: the legend under the table says why";

fn draw_help(f: &mut Frame, area: Rect, st: &Styles) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" dismount_iso_qemu top: help (any key: back) ")
        .border_style(st.header);
    f.render_widget(Paragraph::new(HELP).block(block), area);
}

fn fig_rate(f: &Fig<f64>) -> String {
    match f {
        Ok(v) => format!("{}/s", rate_text(*v)),
        Err(w) => format!("- ({})", w.text()),
    }
}

fn draw_details(f: &mut Frame, area: Rect, ui: &Ui, l: &Line, st: &Styles) {
    let mut text: Vec<TextLine> = Vec::new();
    let r = &l.row;
    let os = match &r.os.text {
        Some(t) => sanitize(t),
        None => format!("- ({})", l.os_why.map_or("unknown", Why::text)),
    };
    text.push(TextLine::from(vec![
        Span::styled(sanitize(&l.label()), st.header),
        Span::raw(format!(
            "  {}  {}  {} vCPU  agent {}  uuid {}",
            r.state.as_str(),
            os,
            r.vcpus,
            r.agent.as_str(),
            r.uuid
        )),
    ]));
    let (cpu, _) = cell_text(l, Column::Cpu);
    let (host, _) = cell_text(l, Column::Host);
    let mem = match l.mem_used_kib {
        Ok(u) => memory_kib(u),
        Err(w) => format!("- ({})", w.text()),
    };
    text.push(TextLine::raw(format!(
        "CPU {cpu}% of its vCPUs, {host}% of the host   memory used {mem} of {}",
        memory_kib(r.memory_max_kib)
    )));
    text.push(TextLine::styled("Drives", st.header));
    if r.media.is_empty() {
        text.push(TextLine::raw("  (no CD-ROM drive)"));
    }
    for d in &r.media {
        text.push(TextLine::raw(format!(
            "  {:<6} {:<5} {}",
            sanitize(&d.target),
            sanitize(d.bus.as_deref().unwrap_or("-")),
            sanitize(d.source.as_deref().unwrap_or("(empty)"))
        )));
    }
    text.push(TextLine::styled("Disks (read, write)", st.header));
    if l.disks.is_empty() {
        text.push(TextLine::raw("  (no statistics)"));
    }
    for d in &l.disks {
        text.push(TextLine::raw(format!(
            "  {:<6} {:>10} {:>10}  {}",
            sanitize(&d.name),
            fig_rate(&d.a_bps),
            fig_rate(&d.b_bps),
            sanitize(&d.about)
        )));
    }
    text.push(TextLine::styled("Interfaces (received, sent)", st.header));
    if l.nics.is_empty() {
        text.push(TextLine::raw("  (none)"));
    }
    for n in &l.nics {
        text.push(TextLine::raw(format!(
            "  {:<8} {:>10} {:>10}  {}",
            sanitize(&n.name),
            fig_rate(&n.a_bps),
            fig_rate(&n.b_bps),
            sanitize(&n.about)
        )));
    }
    let [info, sparks, foot] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(text), info);
    let points: Vec<model::Point> = ui
        .history
        .of(&l.key())
        .map(|q| q.iter().copied().collect())
        .unwrap_or_default();
    let w = sparks.width.saturating_sub(1) as usize;
    let tail = &points[points.len().saturating_sub(w)..];
    let secs = (tail.len() as f64 * ui.interval_secs).round();
    let series: [(String, Vec<u64>); 4] = [
        (
            format!("CPU% (last {secs} s) now {cpu}"),
            tail.iter()
                .map(|p| (p.cpu_pct.unwrap_or(0.0) * 10.0) as u64)
                .collect(),
        ),
        (
            format!("memory used, now {mem}"),
            tail.iter().map(|p| p.mem_kib.unwrap_or(0)).collect(),
        ),
        (
            format!(
                "disk I/O, now {}",
                tail.last()
                    .and_then(|p| p.disk_bps)
                    .map_or("-".into(), |v| format!("{}/s", rate_text(v)))
            ),
            tail.iter()
                .map(|p| p.disk_bps.unwrap_or(0.0) as u64)
                .collect(),
        ),
        (
            format!(
                "network, now {}",
                tail.last()
                    .and_then(|p| p.net_bps)
                    .map_or("-".into(), |v| format!("{}/s", rate_text(v)))
            ),
            tail.iter()
                .map(|p| p.net_bps.unwrap_or(0.0) as u64)
                .collect(),
        ),
    ];
    let rows = Layout::vertical([Constraint::Length(2); 4]).split(sparks);
    for ((title, data), r) in series.into_iter().zip(rows.iter()) {
        let [t, s] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(*r);
        f.render_widget(Paragraph::new(title).style(st.dim), t);
        let style = if ui.color {
            Style::default().fg(Color::Green)
        } else {
            Style::default()
        };
        f.render_widget(Sparkline::default().data(data).style(style), s);
    }
    f.render_widget(
        Paragraph::new("Esc/Enter back  Up/Down previous/next VM  (e, m, E from the table)")
            .style(st.dim),
        foot,
    );
}
