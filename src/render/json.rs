//! `scan --json`: the snapshot as one JSON document (serde, never string pasting).

use std::io::{self, Write};

use serde::Serialize;

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

pub fn write_json(out: &mut impl Write, snap: &Snapshot) -> io::Result<()> {
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        snapshot: snap,
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
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
}
