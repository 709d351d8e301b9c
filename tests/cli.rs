//! The command line as users and scripts see it, on libvirt's built-in test driver
//! (`test:///default`: one running domain named "test", no daemon needed).

mod common;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn bin(home: &tempfile::TempDir) -> Command {
    common::tool(home.path())
}

/// One line on stderr, prefixed, and nothing that looks like a panic.
fn one_clear_line(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr).to_string();
    assert_eq!(s.lines().count(), 1, "expected one line, got: {s}");
    assert!(s.starts_with("dismount_iso_qemu: error: "), "{s}");
    assert!(
        !s.contains("panicked") && !s.contains("RUST_BACKTRACE"),
        "{s}"
    );
    s
}

#[test]
fn scan_prints_the_table_for_the_test_driver() {
    let home = tempfile::tempdir().unwrap();
    for backend in ["native", "virsh"] {
        let out = bin(&home)
            .args(["-c", "test:///default", "--backend", backend, "scan"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("VM                   OS"));
        assert!(lines.next().unwrap().starts_with("-----"));
        let row = lines.next().unwrap();
        assert!(row.starts_with("test "), "{row}");
        assert!(row.contains("running"), "{row}");
        assert!(row.contains(" / 8.0 GiB"), "{row}");
    }
}

#[test]
fn scan_json_is_one_valid_document() {
    let home = tempfile::tempdir().unwrap();
    let out = bin(&home)
        .args(["-c", "test:///default", "scan", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["uri"], "test:///default");
    let vm = &doc["vms"][0];
    assert_eq!(vm["name"], "test");
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["memory_max_kib"], 8_388_608);
    assert_eq!(vm["vcpus"], 2);
    assert_eq!(vm["uuid"].as_str().unwrap().len(), 36);
    // The test driver has no agent: the reason is given, not a made-up OS.
    assert_eq!(vm["os"]["text"], Value::Null);
    assert!(vm["os"]["reason"].as_str().unwrap().len() > 3);
}

#[test]
fn connection_errors_are_one_line_and_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for backend in ["native", "virsh"] {
        let out = bin(&home)
            .args(["-c", "nosuchdriver:///x", "--backend", backend, "scan"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{backend}");
        let line = one_clear_line(&out.stderr);
        assert!(line.contains("nosuchdriver:///x"), "{line}");

        let out = bin(&home)
            .args([
                "-c",
                "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
                "--backend",
                backend,
                "scan",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{backend}");
        let line = one_clear_line(&out.stderr);
        assert!(line.contains("is libvirtd running?"), "{line}");
    }
}

#[test]
fn bad_settings_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = bin(&home)
        .args(["-c", "test:///default", "--probe-timeout", "-1", "scan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin(&home)
        .args(["-c", "test:///default", "--backend", "xen", "scan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let cfg = home.path().join("bad.toml");
    std::fs::write(&cfg, "jobs = \"many\"\n").unwrap();
    let out = bin(&home)
        .args(["--config", cfg.to_str().unwrap(), "scan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = one_clear_line(&out.stderr);
    assert!(line.contains("bad.toml line 1"), "{line}");

    std::fs::write(&cfg, "max_size = \"lots\"\n").unwrap();
    let out = bin(&home)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "-c",
            "test:///default",
            "scan",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = one_clear_line(&out.stderr);
    assert!(line.contains("max_size"), "{line}");
}

#[test]
fn uri_comes_from_flag_then_env_then_config_file() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("dismount_iso_qemu");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), "uri = \"test:///default\"\n").unwrap();
    // The config file alone is enough.
    bin(&home)
        .args(["scan"])
        .assert()
        .success()
        .stdout(predicate::str::contains("test "));
    // libvirt's own variable beats the file.
    bin(&home)
        .env("LIBVIRT_DEFAULT_URI", "nosuchdriver:///env")
        .args(["scan"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nosuchdriver:///env"));
    // LIBVIRT_URI beats LIBVIRT_DEFAULT_URI, and the flag beats both.
    bin(&home)
        .env("LIBVIRT_DEFAULT_URI", "nosuchdriver:///env")
        .env("LIBVIRT_URI", "test:///default")
        .args(["scan"])
        .assert()
        .success();
    bin(&home)
        .env("LIBVIRT_URI", "nosuchdriver:///env")
        .args(["-c", "test:///default", "scan"])
        .assert()
        .success();
}

#[test]
fn menu_runs_on_piped_input_and_exits_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let out = bin(&home)
        .args(["-c", "test:///default"])
        .write_stdin("7\n2\n4\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(
        "--- MENU ---\n1) Mount ISO\n2) Scan mounted ISOs\n3) Modify file in VM\n4) Exit\nSelect option: "
    ));
    assert!(text.contains("\"7\" is not an option"));
    assert!(text.contains("test "));
    // End of input is a clean exit too.
    bin(&home)
        .args(["-c", "test:///default", "menu"])
        .write_stdin("")
        .assert()
        .success();
}

#[test]
fn help_explains_every_global_setting() {
    let home = tempfile::tempdir().unwrap();
    let out = bin(&home).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--connect",
        "LIBVIRT_URI",
        "LIBVIRT_DEFAULT_URI",
        "--backend",
        "--probe-timeout",
        "--cache-ttl",
        "--jobs",
        "Exit codes",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

/// A test-driver node of our own: a CJK name, a hostile name, libosinfo metadata and an ISO
/// whose path has spaces. UUIDs are fixed (the test driver invents new ones otherwise).
const NODE_XML: &str = r#"<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>東京-データベース-サーバー</name>
    <uuid>aaaaaaaa-2222-3333-4444-555555555555</uuid>
    <memory unit='KiB'>33554432</memory>
    <currentMemory unit='KiB'>16777216</currentMemory>
    <vcpu>4</vcpu>
    <os><type>hvm</type></os>
    <metadata>
      <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
        <libosinfo:os id="http://microsoft.com/win/2k22"/>
      </libosinfo:libosinfo>
    </metadata>
    <devices>
      <disk type='file' device='cdrom'>
        <source file='/srv/isos/virtio win &amp; tools é.iso'/>
        <target dev='sda' bus='sata'/><readonly/>
      </disk>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>plain</name>
    <uuid>bbbbbbbb-2222-3333-4444-555555555555</uuid>
    <memory unit='KiB'>1048576</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <test:runstate>3</test:runstate>
  </domain>
</node>
"#;

#[test]
fn wide_names_metadata_and_isos_render_the_same_on_both_backends() {
    let home = tempfile::tempdir().unwrap();
    let node = home.path().join("node.xml");
    std::fs::write(&node, NODE_XML).unwrap();
    let uri = format!("test://{}", node.display());
    let mut tables = Vec::new();
    for backend in ["native", "virsh"] {
        let out = bin(&home)
            .args(["-c", &uri, "--backend", backend, "scan"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tables.push(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(tables[0], tables[1]);
    let lines: Vec<&str> = tables[0].lines().collect();
    // Sorted by name: "plain" sorts before the CJK name.
    let plain = lines[2];
    let wide = lines[3];
    assert!(wide.starts_with("東京-データベース-…"), "{wide}");
    assert!(wide.contains("Microsoft Windows Server 2022"), "{wide}");
    assert!(wide.contains("16.0 GiB / 32.0 GiB"), "{wide}");
    assert!(wide.contains("shut off"), "{wide}");
    assert!(
        wide.ends_with("/srv/isos/virtio win & tools é.iso"),
        "{wide}"
    );
    assert!(plain.contains("paused"), "{plain}");
    // Same display column for the memory value in both rows.
    let col = |l: &str, needle: &str| {
        unicode_width::UnicodeWidthStr::width(&l[..l.find(needle).unwrap()])
    };
    assert_eq!(col(wide, "16.0 GiB"), 62);
    assert_eq!(col(plain, "1.0 GiB"), 62);
}
