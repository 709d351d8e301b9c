//! End-to-end: `scan` and `isos` over several hosts — the real harness, libvirt's test
//! driver as a second host, a port nobody listens on, and a TCP peer that accepts and
//! never answers (libvirt has no connect timeout of its own) — on both backends.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// The scan deadline and connect timeout these tests give; a fleet command may take the
/// two plus 1 s in all.
const PROBE_TIMEOUT_S: u64 = 3;
const CONNECT_TIMEOUT_S: u64 = 3;
const FLEET_LIMIT: Duration = Duration::from_secs(CONNECT_TIMEOUT_S + PROBE_TIMEOUT_S + 1);

/// A config file naming the hosts under test.
fn config(home: &Path, hanging: u16, dead: u16) {
    let dir = home.join("dismount_iso_qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[hosts.harness]\nuri = {harness:?}\n\n[hosts.test]\nuri = \"test:///default\"\n\n\
         [hosts.dead]\nuri = \"qemu+tcp://127.0.0.1:{dead}/system\"\n\n\
         [hosts.hang]\nuri = \"qemu+tcp://127.0.0.1:{hanging}/system\"\n",
        harness = harness_uri()
    );
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

/// A TCP peer that accepts every connection and never says a word (it reads and drops
/// what comes, so the client's writes never block).
fn hanging_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// A port nobody listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(home: &Path, backend: &str, args: &[&str]) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = tool(home)
        .args([
            "--backend",
            backend,
            "--probe-timeout",
            &PROBE_TIMEOUT_S.to_string(),
            "--connect-timeout",
            &CONNECT_TIMEOUT_S.to_string(),
        ])
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    (out, t0.elapsed())
}

/// The harness lock and a home whose config names the hosts under test; `None` without
/// the harness.
fn setup() -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir)> {
    if !harness_available() {
        return None;
    }
    let guard = serial();
    let home = tempfile::tempdir().unwrap();
    config(home.path(), hanging_listener(), dead_port());
    Some((guard, home))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_fleet_scan_has_every_host_and_one_line_per_host_that_failed() {
    let Some((_g, home)) = setup() else {
        return;
    };
    for backend in BACKENDS {
        // Two good hosts: a HOST column first, both hosts' rows, exit 0.
        let (out, took) = run(home.path(), backend, &["--hosts", "harness,test", "scan"]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{backend}: {}",
            text(&out.stderr)
        );
        let mut lines = stdout.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("HOST    VM "), "{header:?}");
        assert!(header.ends_with("ISO"), "{header:?}");
        let ubuntu = stdout
            .lines()
            .find(|l| l.starts_with("harness diq-ubuntu "))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(ubuntu.contains("Ubuntu 18.04.6 LTS"), "{ubuntu}");
        assert!(ubuntu.contains("harness.iso"), "{ubuntu}");
        assert!(
            stdout.lines().any(|l| l.starts_with("test    test ")),
            "{stdout}"
        );
        eprintln!("TIMING {backend}: fleet scan of 2 hosts: {took:?}");

        // One host chosen by name: the one-host layout, exactly as before.
        let (out, _) = run(home.path(), backend, &["--hosts", "harness", "scan"]);
        assert!(
            text(&out.stdout).starts_with("VM "),
            "{}",
            text(&out.stdout)
        );

        // Every host of the config: the dead and the hanging one fail alone, in time.
        let (out, took) = run(home.path(), backend, &["--all-hosts", "scan", "--json"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert!(
            took < FLEET_LIMIT + Duration::from_secs(2),
            "{backend}: took {took:?}"
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        let hosts = doc["hosts"].as_array().unwrap();
        let status = |name: &str| hosts.iter().find(|h| h["host"] == name).unwrap().clone();
        assert_eq!(status("harness")["ok"], true);
        assert_eq!(status("test")["ok"], true);
        assert_eq!(status("dead")["ok"], false);
        assert_eq!(status("hang")["ok"], false);
        assert!(
            status("hang")["error"]
                .as_str()
                .unwrap()
                .contains(&format!("within {CONNECT_TIMEOUT_S} s")),
            "{}",
            status("hang")
        );
        let vms = doc["vms"].as_array().unwrap();
        let ubuntu = vms
            .iter()
            .find(|v| v["host"] == "harness" && v["name"] == "diq-ubuntu")
            .unwrap();
        assert_eq!(ubuntu["os"]["text"], "Ubuntu 18.04.6 LTS");
        assert!(vms
            .iter()
            .any(|v| v["host"] == "test" && v["name"] == "test"));
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: host "))
            .collect();
        assert_eq!(errors.len(), 2, "{stderr}");
        assert!(
            errors
                .iter()
                .any(|l| l.starts_with("error: host dead (qemu+tcp://127.0.0.1:")),
            "{stderr}"
        );
        assert!(
            errors
                .iter()
                .any(|l| l.starts_with("error: host hang (qemu+tcp://127.0.0.1:")),
            "{stderr}"
        );
        eprintln!(
            "TIMING {backend}: fleet scan of 4 hosts, one refusing, one hanging: {took:?} \
             (limit {FLEET_LIMIT:?}); errors: {errors:?}"
        );
    }
}

#[test]
fn isos_and_top_cover_every_host() {
    let Some((_g, home)) = setup() else {
        return;
    };
    for backend in BACKENDS {
        let (out, _) = run(
            home.path(),
            backend,
            &["--hosts", "harness,test", "isos", "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ubuntu = doc["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["host"] == "harness" && v["name"] == "diq-ubuntu")
            .unwrap()
            .clone();
        assert_eq!(ubuntu["drives"][0]["target"], "sda");
        assert_eq!(doc["hosts"].as_array().unwrap().len(), 2);

        let iso = ubuntu["drives"][0]["live"]["source"]
            .as_str()
            .unwrap()
            .to_string();
        let (out, _) = run(
            home.path(),
            backend,
            &["--hosts", "harness,test", "isos", "--iso", &iso],
        );
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("HOST    VM "), "{stdout}");
        assert!(
            stdout.lines().any(|l| l.starts_with("harness diq-ubuntu ")),
            "{stdout}"
        );
        assert!(!stdout.lines().any(|l| l.starts_with("test ")), "{stdout}");

        // top --batch covers every host: records carry `host`, each host has its own
        // intervals, and a host that cannot be opened is its error line and exit 1.
        let (out, took) = run(
            home.path(),
            backend,
            &[
                "--hosts",
                "harness,test,dead",
                "top",
                "--batch",
                "--iterations",
                "2",
                "-d",
                "1",
                "--format",
                "jsonl",
            ],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert!(stderr.contains("error: host dead ("), "{stderr}");
        let records: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let of = |host: &str, vm: &str| {
            let mut its: Vec<u64> = records
                .iter()
                .filter(|r| r["host"] == host && r["vm"] == vm)
                .map(|r| r["iteration"].as_u64().unwrap())
                .collect();
            its.sort();
            its
        };
        assert_eq!(
            of("harness", "diq-ubuntu"),
            [1, 2],
            "{backend}: {records:?}"
        );
        assert_eq!(of("test", "test"), [1, 2], "{backend}: {records:?}");
        assert!(records.iter().all(|r| r["host"] != "dead"));
        eprintln!("TIMING {backend}: top --batch over 3 hosts, 2 intervals: {took:?}");
        assert!(took < FLEET_LIMIT + Duration::from_secs(3), "{took:?}");

        // An unknown host name: one clear line naming the known ones.
        let (out, _) = run(home.path(), backend, &["--hosts", "nope", "scan"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(
            "no host named \"nope\" in the config file (its hosts: dead, hang, harness, test)"
        ));
    }
}

/// A second harness disc: from `scripts/harness.sh env` when set, else beside the first.
fn second_iso(first: &str) -> String {
    std::env::var("HARNESS_SECOND_ISO").unwrap_or_else(|_| {
        Path::new(first)
            .with_file_name("second disc é.iso")
            .to_string_lossy()
            .into_owned()
    })
}

/// `cat VM /etc/hostname` with `--hosts HOSTS`.
fn cat_hostname(home: &Path, backend: &str, hosts: &str, vm: &str) -> Output {
    run(
        home,
        backend,
        &["--hosts", hosts, "cat", vm, "/etc/hostname"],
    )
    .0
}

/// Put `iso` into a running and a shut-off media guest of the harness, addressed as
/// HOST:VM.
fn mount_media_guests(home: &Path, backend: &str, iso: &str) {
    for vm in ["diq-media-a", "diq-media-off"] {
        let (out, _) = run(home, backend, &["mount", &format!("harness:{vm}"), iso]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}

#[test]
fn eject_across_hosts_lists_asks_and_takes_and_host_vm_picks_the_host() {
    let Some((_g, home)) = setup() else {
        return;
    };
    // The harness again under another name: every VM is on two "hosts".
    let cfg = home.path().join("dismount_iso_qemu").join("config.toml");
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg.push_str(&format!("\n[hosts.twin]\nuri = {:?}\n", harness_uri()));
    std::fs::write(&cfg, text_cfg).unwrap();
    let (out, _) = run(
        home.path(),
        "native",
        &["--hosts", "harness", "isos", "--json"],
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = doc["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "diq-ubuntu")
        .unwrap()["drives"][0]["live"]["source"]
        .as_str()
        .unwrap()
        .to_string();
    let second = second_iso(&first);
    for backend in BACKENDS {
        mount_media_guests(home.path(), backend, &second);
        let fleet = ["--hosts", "harness,test"];
        let with = |extra: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = fleet.iter().map(|s| s.to_string()).collect();
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        // Each host's VM list kept for ten minutes; the fleet eject must drop the lists
        // it changed, or a scan within the TTL would still show the discs.
        let kept_scan = || {
            let args = with(&["scan", "--json", "--stats-ttl", "600"]);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let (out, _) = run(home.path(), backend, &argv);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
            let off = doc["vms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["host"] == "harness" && v["name"] == "diq-media-off")
                .unwrap()
                .clone();
            off["media"].to_string()
        };
        assert!(kept_scan().contains(&second), "{backend}: mounted");
        let args = with(&["eject", "--iso", &second, "--dry-run"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _) = run(home.path(), backend, &argv);
        assert_eq!(
            text(&out.stdout),
            format!(
                "harness: diq-media-a: sda would eject {second}\nharness: diq-media-off: sda would eject {second}\n"
            )
        );
        // No terminal and no --yes: refused with what it would do, nothing changed.
        let args = with(&["eject", "--iso", &second]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _) = run(home.path(), backend, &argv);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr)
                .contains("would take 2 disc(s) from 2 VM(s) on 1 host(s) (harness): pass --yes"),
            "{}",
            text(&out.stderr)
        );
        let args = with(&["eject", "--iso", &second, "--yes"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, took) = run(home.path(), backend, &argv);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.contains(&format!(
                "harness: diq-media-a: sda ejected {second} (live and config)"
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "harness: diq-media-off: sda ejected {second} (config)"
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains("harness: 2 VMs: 2 ejected, 0 already empty, 0 locked, 0 failed"),
            "{stdout}"
        );
        eprintln!("TIMING {backend}: eject --iso across 2 hosts (2 VMs): {took:?}");
        assert!(
            !kept_scan().contains(&second),
            "{backend}: the eject dropped the kept list"
        );
        let args = with(&["eject", "--iso", &second, "--yes"]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _) = run(home.path(), backend, &argv);
        assert_eq!(
            text(&out.stdout),
            format!("no VM on these hosts holds {second}\n")
        );

        // One VM on a fleet: HOST:VM picks the host; a name on two hosts is refused.
        let out = cat_hostname(home.path(), backend, "harness,twin", "twin:diq-ubuntu");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let out = cat_hostname(home.path(), backend, "harness,twin", "diq-ubuntu");
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("VM \"diq-ubuntu\" is on 2 hosts (harness, twin): say which with HOST:VM, e.g. harness:diq-ubuntu"),
            "{}",
            text(&out.stderr)
        );
        // --host NAME is NAME:VM.
        let (out, _) = run(
            home.path(),
            backend,
            &["--host", "twin", "cat", "diq-ubuntu", "/etc/hostname"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        // A name on one host of several goes there without a prefix.
        let out = cat_hostname(home.path(), backend, "harness,test", "diq-ubuntu");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        mount_media_guests(home.path(), backend, &first);
    }
}

#[test]
fn serve_probes_each_configured_host() {
    let Some((_g, home)) = setup() else {
        return;
    };
    let (mut child, addr, log) = spawn_serve(
        tool_process(home.path())
            .args([
                "-c",
                harness_uri(),
                "--probe-timeout",
                "3",
                "--connect-timeout",
                "3",
            ])
            .args(["serve", "--listen", "127.0.0.1:0", "--interval", "2"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    );
    let wait = |path: &str, want: &str| {
        let end = Instant::now() + FLEET_LIMIT + Duration::from_secs(10);
        loop {
            let (st, _, body) = http_get(addr, path, None);
            if st == 200 && body.contains(want) {
                return body;
            }
            assert!(
                Instant::now() < end,
                "{path} never showed {want:?}: {st} {body}; log: {:#?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let t0 = Instant::now();
    let test = wait("/probe?target=test", "libvirt_domain_info{");
    assert!(test.contains("domain=\"test\""), "{test}");
    assert!(!test.contains("diq-ubuntu"));
    let harness = wait(
        "/probe?target=harness",
        "os_pretty_name=\"Ubuntu 18.04.6 LTS\"",
    );
    assert!(harness.contains("domain=\"diq-ubuntu\""));
    // The dead and the hanging host: their own libvirt_up 0, nobody else's.
    wait("/probe?target=dead", "libvirt_up 0");
    wait("/metrics", "domain=\"diq-ubuntu\"");
    let (st, _, body) = http_get(addr, "/probe?target=elsewhere", None);
    assert_eq!(st, 404, "{body}");
    eprintln!(
        "TIMING serve: every /probe target answered within {:?}",
        t0.elapsed()
    );
    // A scrape of a hanging target is served at once from its (empty) snapshot.
    let t1 = Instant::now();
    let (st, _, _) = http_get(addr, "/probe?target=hang", None);
    assert_eq!(st, 200);
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
    let logged = log.lock().unwrap().join("\n");
    assert!(
        logged.contains(
            "/probe?target=NAME serves 4 host(s) of the config file: dead, hang, harness, test"
        ),
        "{logged}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// libvirt's own `uri_aliases` work wherever a URI does: as `-c`, and in a host table.
/// The aliases live in a libvirt.conf of the test's own, bind-mounted over
/// /etc/libvirt in a private mount namespace of the tool's process only; the host's
/// /etc/libvirt is never touched.
#[test]
fn libvirt_uri_aliases_work_as_hosts() {
    let Some((_g, home)) = setup() else {
        return;
    };
    let etc = tempfile::tempdir().unwrap();
    std::fs::write(
        etc.path().join("libvirt.conf"),
        format!(
            "uri_aliases = [\n  \"fleet-harness={}\",\n  \"fleet-test=test:///default\",\n]\n",
            harness_uri()
        ),
    )
    .unwrap();
    let cfg = home.path().join("dismount_iso_qemu").join("config.toml");
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg.push_str("\n[hosts.aliased]\nuri = \"fleet-test\"\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let exe = env!("CARGO_BIN_EXE_dismount_iso_qemu");
    for backend in BACKENDS {
        let run_aliased = |args: &[&str]| -> Output {
            let mut c = std::process::Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg("mount --bind \"$0\" /etc/libvirt && exec \"$@\"")
                .arg(etc.path())
                .arg(exe)
                .args(["--backend", backend, "--probe-timeout", "3"])
                .args(args)
                .env("XDG_CONFIG_HOME", home.path())
                .env("XDG_CACHE_HOME", home.path())
                .env_remove("LIBVIRT_DEFAULT_URI")
                .env_remove("LIBVIRT_URI")
                .stdin(std::process::Stdio::null());
            c.output().unwrap()
        };
        let out = run_aliased(&["-c", "fleet-harness", "-c", "fleet-test", "scan", "--json"]);
        let doc = ok_json(&out, backend);
        let vms = doc["vms"].as_array().unwrap();
        assert!(vms
            .iter()
            .any(|v| v["host"] == "fleet-harness" && v["name"] == "diq-ubuntu"));
        // A -c URI the config file names is shown by that name.
        assert!(vms
            .iter()
            .any(|v| v["host"] == "aliased" && v["name"] == "test"));
        let out = run_aliased(&["--hosts", "aliased,harness", "isos", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{backend}: {}",
            text(&out.stderr)
        );
        // One alias alone: the one-host table.
        let out = run_aliased(&["-c", "fleet-test", "scan"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{backend}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with("VM "),
            "{}",
            text(&out.stdout)
        );
    }
    // The host's own file is as it was.
    let host_conf = std::fs::read_to_string("/etc/libvirt/libvirt.conf").unwrap_or_default();
    assert!(!host_conf.contains("fleet-harness"));
}

/// `edit HOST:VM` on a fleet: the scripted editor's change lands in the VM of the host
/// named, and `--host` does the same.
#[test]
fn edit_goes_to_the_host_named() {
    let Some((_g, home)) = setup() else {
        return;
    };
    let editor = home.path().join("ed.sh");
    std::fs::write(&editor, "#!/bin/sh\nset -e\nsed -i 's/x=1/x=2/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let prefixed = format!("harness:{UBUNTU}");
    for backend in BACKENDS {
        let dir = guest::GuestDir::new(UBUNTU, backend);
        let f = dir.file("fleet.conf");
        for how in [
            ["--hosts", "harness,test", prefixed.as_str()],
            ["--host", "harness", UBUNTU],
        ] {
            guest::guest_put(UBUNTU, &f, b"x=1\n");
            let out = tool(home.path())
                .env("EDITOR", &editor)
                .args(["--backend", backend, how[0], how[1]])
                .args(["edit", how[2], &f, "--yes"])
                .timeout(Duration::from_secs(120))
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{backend} {how:?}: {}",
                text(&out.stderr)
            );
            assert_eq!(guest::guest_get(UBUNTU, &f), b"x=2\n", "{backend} {how:?}");
        }
    }
}

/// The menu over several hosts: each list names VMs as HOST:VM, the table has a HOST
/// column, and a host that cannot be opened is one line while the others work.
#[test]
fn the_menu_covers_every_host_chosen() {
    let Some((_g, home)) = setup() else {
        return;
    };
    for backend in BACKENDS {
        let t0 = Instant::now();
        let out = tool(home.path())
            .args(["--backend", backend, "--probe-timeout", "3"])
            .args(["--connect-timeout", "3", "--hosts", "harness,test,dead"])
            .arg("menu")
            .write_stdin("1\n\n2\n\n3\n\n4\n")
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        let took = t0.elapsed();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{backend}: {stderr}");
        // The dead host: one line, before the menu, and the menu goes on without it.
        let dead: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: host dead (qemu+tcp://127.0.0.1:"))
            .collect();
        assert_eq!(dead.len(), 1, "{backend}: {stderr}");
        assert!(stdout.starts_with("--- MENU ---\n"), "{backend}: {stdout}");
        // Option 1: every host's VMs by HOST:VM.
        for item in [
            ") harness:diq-media-off (shut off)",
            ") test:test (running)",
        ] {
            assert!(stdout.contains(item), "{backend}: {item} in {stdout}");
        }
        // Option 2: the fleet table.
        assert!(stdout.contains(": HOST    VM "), "{backend}: {stdout}");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("harness diq-ubuntu ") && l.contains("Ubuntu")),
            "{backend}: {stdout}"
        );
        assert!(stdout.lines().any(|l| l.starts_with("test    test ")));
        assert!(
            stdout.contains(") harness:diq-ubuntu sda: "),
            "{backend}: {stdout}"
        );
        // Option 3: running VMs of both hosts; shut-off ones named apart.
        let running = stdout.split("Running VMs:\n").nth(1).unwrap_or("");
        assert!(
            running.contains(") harness:diq-ubuntu\n"),
            "{backend}: {stdout}"
        );
        assert!(running.contains(") test:test\n"), "{backend}: {stdout}");
        assert!(
            stdout.contains("harness:diq-media-off"),
            "{backend}: {stdout}"
        );
        assert!(took < Duration::from_secs(60), "{backend}: {took:?}");
        eprintln!("TIMING {backend}: menu over 3 hosts (1 dead), 3 options: {took:?}");
    }
}

/// A host's own settings in its `[hosts.NAME]` table beat the global ones for it alone:
/// the hanging host given `connect_timeout = 1` is given up after 1 s while the flag says 3,
/// and `test` with `stats_ttl` reuses its VM list while `harness` reads its own again.
#[test]
fn a_hosts_own_settings_beat_the_global_ones_for_it_alone() {
    let Some((_g, home)) = setup() else {
        return;
    };
    let config = home.path().join("dismount_iso_qemu").join("config.toml");
    let text_before = std::fs::read_to_string(&config).unwrap();
    // The hanging host's table is the file's last; test's gets a statistics TTL.
    let tuned = format!("{text_before}connect_timeout = 1\n").replace(
        "uri = \"test:///default\"\n",
        "uri = \"test:///default\"\nstats_ttl = 600\n",
    );
    std::fs::write(&config, tuned).unwrap();
    for backend in BACKENDS {
        let t0 = Instant::now();
        let (out, _) = run(home.path(), backend, &["--hosts", "hang,test", "scan"]);
        let took = t0.elapsed();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        let hang: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: host hang "))
            .collect();
        assert_eq!(hang.len(), 1, "{backend}: {stderr}");
        assert!(hang[0].contains(" within 1 s"), "{backend}: {stderr}");
        assert!(
            took < Duration::from_secs(CONNECT_TIMEOUT_S),
            "{backend}: {took:?}"
        );

        let (out, _) = run(
            home.path(),
            backend,
            &["--hosts", "harness,test", "scan", "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(1100));
        let (out, _) = run(
            home.path(),
            backend,
            &["--hosts", "harness,test", "scan", "--json"],
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        let age = |host: &str| {
            doc["vms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["host"] == host)
                .unwrap()["ages"]["statistics_seconds"]
                .as_u64()
                .unwrap()
        };
        assert!(age("test") >= 1, "{backend}: {doc}");
        assert_eq!(age("harness"), 0, "{backend}");
    }
}
