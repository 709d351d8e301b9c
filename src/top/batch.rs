//! `top --batch`: one record per VM per interval, as CSV (a header line first) or JSON
//! lines. The fields and their meaning are fixed ([`FIELDS`]; README, "top"); a field
//! without a figure is empty (CSV) or `null` (JSON), and `missing` says why. With several
//! hosts a `host` field comes first and each host counts its own intervals.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use super::model::{Fig, Line};
use crate::render::json::write_compact;
use crate::render::text::sanitize;

/// The JSON lines' `schema_version`: it grows only when a field is removed or changes
/// meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

/// Every record's fields, in CSV column order.
pub const FIELDS: [&str; 18] = [
    "time",
    "iteration",
    "vm",
    "uuid",
    "state",
    "os",
    "agent",
    "vcpus",
    "cpu_pct",
    "host_cpu_pct",
    "mem_used_kib",
    "mem_max_kib",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
    "iso",
    "missing",
];

fn pct(f: &Fig<f64>) -> Value {
    match f {
        Ok(v) => json!((v * 100.0).round() / 100.0),
        Err(_) => Value::Null,
    }
}

fn bps(f: &Fig<f64>) -> Value {
    match f {
        Ok(v) => json!(v.round() as u64),
        Err(_) => Value::Null,
    }
}

/// The records' fields, in CSV column order: [`FIELDS`], after `host` with several hosts.
pub fn fields(hosts: bool) -> Vec<&'static str> {
    let host = hosts.then_some("host");
    host.into_iter().chain(FIELDS).collect()
}

/// One VM's record as a JSON object (field order as [`fields`]).
pub fn record(time: f64, iteration: u64, l: &Line) -> Map<String, Value> {
    let r = &l.row;
    let mut missing = Map::new();
    let figs: [(&str, Option<super::model::Why>); 7] = [
        ("cpu_pct", l.cpu_pct.err()),
        ("host_cpu_pct", l.host_pct.err()),
        ("mem_used_kib", l.mem_used_kib.err()),
        ("disk_read_bps", l.rd_bps.err()),
        ("disk_write_bps", l.wr_bps.err()),
        ("net_rx_bps", l.rx_bps.err()),
        ("net_tx_bps", l.tx_bps.err()),
    ];
    for (k, w) in figs {
        if let Some(w) = w {
            missing.insert(k.into(), json!(w.key()));
        }
    }
    if let Some(w) = l.os_why {
        missing.insert("os".into(), json!(w.key()));
    }
    let isos: Vec<&str> = r.media.iter().filter_map(|d| d.source.as_deref()).collect();
    let mut m = Map::new();
    if let Some(h) = &l.host {
        m.insert("host".into(), json!(h.as_ref()));
    }
    m.insert("time".into(), json!((time * 1000.0).round() / 1000.0));
    m.insert("iteration".into(), json!(iteration));
    m.insert("vm".into(), json!(r.name));
    m.insert("uuid".into(), json!(r.uuid));
    m.insert("state".into(), json!(r.state));
    m.insert("os".into(), json!(r.os.text));
    m.insert("agent".into(), json!(r.agent));
    m.insert("vcpus".into(), json!(r.vcpus));
    m.insert("cpu_pct".into(), pct(&l.cpu_pct));
    m.insert("host_cpu_pct".into(), pct(&l.host_pct));
    m.insert(
        "mem_used_kib".into(),
        l.mem_used_kib.map_or(Value::Null, |v| json!(v)),
    );
    m.insert("mem_max_kib".into(), json!(r.memory_max_kib));
    m.insert("disk_read_bps".into(), bps(&l.rd_bps));
    m.insert("disk_write_bps".into(), bps(&l.wr_bps));
    m.insert("net_rx_bps".into(), bps(&l.rx_bps));
    m.insert("net_tx_bps".into(), bps(&l.tx_bps));
    m.insert("iso".into(), json!(isos));
    m.insert("missing".into(), Value::Object(missing));
    m
}

/// The CSV header line (`hosts`: with the `host` field).
pub fn write_header(out: &mut dyn Write, format: Format, hosts: bool) -> io::Result<()> {
    if format == Format::Csv {
        writeln!(out, "{}", fields(hosts).join(","))?;
    }
    Ok(())
}

fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => sanitize(s),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(sanitize)
            .collect::<Vec<_>>()
            .join(";"),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    };
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The records of one interval.
pub fn write_records(
    out: &mut dyn Write,
    format: Format,
    time: f64,
    iteration: u64,
    lines: &[Line],
) -> io::Result<()> {
    for l in lines {
        let mut rec = record(time, iteration, l);
        match format {
            Format::Jsonl => {
                let mut doc = Map::new();
                doc.insert("schema_version".into(), json!(SCHEMA_VERSION));
                doc.append(&mut rec);
                write_compact(out, &Value::Object(doc))?;
            }
            Format::Csv => {
                let cells: Vec<String> = fields(l.host.is_some())
                    .iter()
                    .map(|f| csv_field(rec.get(*f).unwrap_or(&Value::Null)))
                    .collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
    }
    out.flush()
}
