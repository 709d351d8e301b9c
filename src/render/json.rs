//! `scan --json`: the snapshot as one JSON document (serde, never string pasting), and
//! [`write_pretty`], the way every JSON document of the tool is written.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

use crate::snapshot::Snapshot;

/// The version of every JSON document the tool prints (`scan --json`, `isos --json`).
/// It grows when a field is removed or changes meaning; new fields keep it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

/// How one host of a fleet command fared (`hosts` of its JSON document).
#[derive(Debug, Serialize)]
pub struct HostStatus<'a> {
    pub host: &'a str,
    pub uri: &'a str,
    pub ok: bool,
    pub error: Option<&'a str>,
    pub duration_ms: u64,
}

/// One item of a fleet document's list: the host's name, then the item's own fields.
#[derive(Serialize)]
pub struct OnHost<'a, T: Serialize> {
    pub host: &'a str,
    #[serde(flatten)]
    pub item: &'a T,
}

#[derive(Serialize)]
struct FleetScan<'a> {
    schema_version: u32,
    hosts: &'a [HostStatus<'a>],
    vms: Vec<OnHost<'a, crate::snapshot::VmRow>>,
    errors: Vec<String>,
}

/// `scan --json` over several hosts: every host's status, every VM with its `host`, and
/// each host's per-VM warnings prefixed with the host.
pub fn write_fleet_json(
    out: &mut impl Write,
    hosts: &[HostStatus],
    snaps: &[(&str, &Snapshot)],
) -> io::Result<()> {
    let doc = FleetScan {
        schema_version: SCHEMA_VERSION,
        hosts,
        vms: snaps
            .iter()
            .flat_map(|(host, s)| s.vms.iter().map(move |item| OnHost { host, item }))
            .collect(),
        errors: snaps
            .iter()
            .flat_map(|(host, s)| s.errors.iter().map(move |e| format!("{host}: {e}")))
            .collect(),
    };
    write_pretty(out, &doc)
}

pub fn write_json(out: &mut impl Write, snap: &Snapshot) -> io::Result<()> {
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        snapshot: snap,
    };
    write_pretty(out, &doc)
}

/// `value` as pretty JSON and a newline, with every character a terminal would act on or
/// hide written as a `\uXXXX` escape: serde_json escapes only C0 controls, and a guest's
/// DEL, C1 controls (U+009B starts an escape sequence on many terminals), bidi overrides
/// and zero-width characters would otherwise reach stdout raw. A JSON reader gets the
/// same strings back; a terminal gets only visible text.
pub fn write_pretty<W: Write + ?Sized, T: Serialize + ?Sized>(
    out: &mut W,
    value: &T,
) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, TerminalSafe::default());
    value.serialize(&mut ser)?;
    writeln!(out)
}

/// `value` as one line of JSON and a newline (JSON lines), terminal-safe like
/// [`write_pretty`]: serde_json escapes C0 controls in strings, and every other character
/// [`must_escape`] names can only stand inside a string, where `\uXXXX` is the same text.
pub fn write_compact<W: Write + ?Sized, T: Serialize + ?Sized>(
    out: &mut W,
    value: &T,
) -> io::Result<()> {
    let text = serde_json::to_string(value)?;
    let mut line = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if must_escape(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                line.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            line.push(c);
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// serde_json's pretty formatter, escaping what [`crate::render::text::sanitize`] escapes.
#[derive(Default)]
struct TerminalSafe(PrettyFormatter<'static>);

fn must_escape(c: char) -> bool {
    c.is_control() || crate::render::text::is_invisible(c)
}

impl Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| must_escape(c)) {
            w.write_all(&rest.as_bytes()[..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::table::tests::row;

    #[test]
    fn names_units_and_sources() {
        let snap = Snapshot {
            uri: "test:///default".into(),
            taken_at: 1,
            duration_ms: 2,
            vms: vec![
                row("a\"b", Some("Ubuntu"), 1, 2, 3.5),
                row("c", None, 1, 2, 0.0),
            ],
            errors: vec![],
            telemetry: None,
        };
        let mut buf = Vec::new();
        write_json(&mut buf, &snap).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        let vm = &v["vms"][0];
        assert_eq!(vm["name"], "a\"b");
        assert_eq!(vm["memory_used_kib"], 1);
        assert_eq!(vm["memory_max_kib"], 2);
        assert_eq!(vm["cpu_time_seconds"], 3.5);
        assert_eq!(vm["state"], "running");
        assert_eq!(vm["os"]["text"], "Ubuntu");
        assert_eq!(vm["os"]["source"], "guest-get-osinfo");
        assert_eq!(v["vms"][1]["os"]["text"], serde_json::Value::Null);
        assert_eq!(v["vms"][1]["os"]["reason"], "agent not connected");
    }

    #[test]
    fn guest_strings_reach_stdout_escaped_and_come_back_whole() {
        let hostile = "a\u{1b}[2J\u{9b}31m\u{7f}\u{202e}rtl\u{200b}\u{e0041}\n\"é 😀 z";
        let mut buf = Vec::new();
        write_pretty(&mut buf, &serde_json::json!({ "os": hostile })).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && must_escape(c))
            .collect();
        assert!(raw.is_empty(), "raw {raw:?} in {text}");
        assert!(
            text.contains(r"\u009b") && text.contains(r"\u202e"),
            "{text}"
        );
        assert!(text.contains(r"\udb40\udc41"), "surrogate pair: {text}");
        assert!(text.contains("é 😀 z"), "{text}");
        let back: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back["os"], hostile);
    }
}
