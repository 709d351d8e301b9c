//! End-to-end: `scan` against the real harness (libvirtd + QEMU + qemu-ga), both backends.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

use common::*;

/// The tool's default deadline. TCG guests on a loaded two-core machine sometimes need
/// seconds for a guest-exec; the bound under test is "deadline plus a small margin".
const PROBE_TIMEOUT_S: u64 = 5;
const MARGIN: Duration = Duration::from_millis(2500);

// libvirt serialises agent calls per VM and each call to the frozen guest holds a daemon
// worker for 5 s: these tests run one at a time (`serial()`) so they measure the tool,
// not a queue they built themselves.

fn bin(cache: &tempfile::TempDir, backend: &str) -> Command {
    tool_on_harness(cache.path(), backend)
}

fn scan_json(cache: &tempfile::TempDir, backend: &str, extra: &[&str]) -> (Value, Duration) {
    let t0 = Instant::now();
    let out: Output = bin(cache, backend)
        .args([
            "--probe-timeout",
            &PROBE_TIMEOUT_S.to_string(),
            "scan",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).expect("valid JSON"),
        took,
    )
}

fn vm<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {doc}"))
}

#[test]
fn every_guest_has_its_state_os_and_source_on_both_backends() {
    let _serial = serial();
    if !harness_available() {
        return;
    }
    let mut rows = Vec::new();
    for backend in BACKENDS {
        let cache = tempfile::tempdir().unwrap();
        let (mut doc, took) = scan_json(&cache, backend, &["--no-cache"]);
        // Nine TCG guests share two cores: a healthy agent that misses one deadline is
        // reported (it shows in the CI log) and asked once more; a second miss fails.
        let healthy = [UBUNTU, CENTOS, DEBIAN_EXEC, NO_AGENT];
        if healthy.iter().any(|n| vm(&doc, n)["agent"] == "timeout") {
            eprintln!("{backend}: a healthy agent missed the deadline, scanning once more: {doc}");
            doc = scan_json(&cache, backend, &["--no-cache"]).0;
        }
        // The frozen guest costs at most the probe timeout (5 s) plus a margin.
        assert!(
            took < Duration::from_secs(PROBE_TIMEOUT_S) + MARGIN,
            "{backend}: scan took {took:?}"
        );

        let expect = [
            (
                UBUNTU,
                "running",
                Some("Ubuntu 18.04.6 LTS"),
                Some("guest-get-osinfo"),
                "ok",
            ),
            (
                CENTOS,
                "running",
                Some("CentOS Stream 10 (Coughlan)"),
                Some("guest-get-osinfo"),
                "ok",
            ),
            (
                DEBIAN_EXEC,
                "running",
                Some("Debian GNU/Linux 12 (bookworm)"),
                Some("guest-exec"),
                "ok",
            ),
            (NO_AGENT, "running", None, None, "absent"),
            (
                NO_EXEC,
                "running",
                Some("Alpine Linux v3.20"),
                Some("guest-get-osinfo"),
                "ok",
            ),
            (FROZEN, "running", None, None, "timeout"),
            (PAUSED, "paused", None, None, "not-asked"),
            (
                WIN_OFF,
                "shut_off",
                Some("Microsoft Windows Server 2022"),
                Some("libosinfo-metadata"),
                "not-asked",
            ),
        ];
        for (name, state, os, source, agent) in expect {
            let v = vm(&doc, name);
            assert_eq!(v["state"], state, "{backend} {name}");
            assert_eq!(v["os"]["text"].as_str(), os, "{backend} {name}: {v}");
            assert_eq!(v["os"]["source"].as_str(), source, "{backend} {name}");
            assert_eq!(v["agent"], agent, "{backend} {name}: {v}");
            assert!(
                v["memory_max_kib"].as_u64().unwrap() >= 262_144,
                "{backend} {name}"
            );
            assert!(v["uuid"].as_str().unwrap().len() == 36);
        }
        assert_eq!(vm(&doc, NO_AGENT)["os"]["reason"], "agent not connected");
        // The absent agent answers at once, not after the deadline.
        assert!(vm(&doc, NO_AGENT)["probe_ms"].as_u64().unwrap() < 1500);
        assert!(vm(&doc, FROZEN)["os"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"));
        assert_eq!(vm(&doc, PAUSED)["os"]["reason"], "VM paused");
        assert!(vm(&doc, UBUNTU)["media"][0]["source"]
            .as_str()
            .unwrap()
            .ends_with("harness.iso"));
        assert_eq!(vm(&doc, CENTOS)["media"][0]["source"], Value::Null);
        assert!(vm(&doc, UBUNTU)["cpu_time_seconds"].as_f64().unwrap() > 0.0);

        // Rows sorted by name.
        let names: Vec<&str> = doc["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        rows.push(doc);
    }
    // Both backends see the same guests with the same facts.
    let facts = |doc: &Value| -> Vec<(String, String, String, String, String, u64)> {
        doc["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].to_string(),
                    v["uuid"].to_string(),
                    v["state"].to_string(),
                    v["os"]["text"].to_string(),
                    v["media"].to_string(),
                    v["memory_max_kib"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(facts(&rows[0]), facts(&rows[1]));
}

#[test]
fn second_scan_within_the_ttl_does_not_wait_for_the_frozen_guest() {
    let _serial = serial();
    if !harness_available() {
        return;
    }
    for backend in BACKENDS {
        let cache = tempfile::tempdir().unwrap();
        let (_, cold) = scan_json(&cache, backend, &[]);
        assert!(
            cold >= Duration::from_secs(PROBE_TIMEOUT_S) - Duration::from_millis(500),
            "{backend}: cold scan {cold:?} did not wait for the frozen agent?"
        );
        let (doc, warm) = scan_json(&cache, backend, &[]);
        assert!(
            warm < Duration::from_millis(2000),
            "{backend}: warm scan took {warm:?}"
        );
        assert_eq!(vm(&doc, FROZEN)["agent"], "timeout");
        assert_eq!(vm(&doc, UBUNTU)["os"]["cached"], true);
        assert_eq!(vm(&doc, UBUNTU)["os"]["text"], "Ubuntu 18.04.6 LTS");
    }
}

#[test]
fn table_has_the_seed_columns_and_every_guest() {
    let _serial = serial();
    if !harness_available() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let out = bin(&cache, "native")
        .args(["--probe-timeout", &PROBE_TIMEOUT_S.to_string(), "scan"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert_eq!(header.find("OS"), Some(21));
    assert_eq!(header.find("Memory (used/max)"), Some(62));
    for name in [
        UBUNTU,
        CENTOS,
        DEBIAN_EXEC,
        NO_AGENT,
        FROZEN,
        PAUSED,
        WIN_OFF,
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        if name == UBUNTU {
            assert!(line.contains("Ubuntu 18.04.6 LTS"));
            assert!(line.contains("256.0 MiB / 256.0 MiB"));
            assert!(line.contains("harness.iso"));
        }
        if name == WIN_OFF {
            assert!(line.contains("shut off"));
        }
    }
    // Piped: no spinner escape sequences on stderr.
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\x1b'));
}
