//! `top` on the harness: in a real terminal (tmux) — start, sort, filter, details, a
//! dismount with its question, an edit with a scripted editor, quit and SIGTERM leaving
//! the terminal clean — and `--batch` output checked against its schema on both backends.
//! The dismount and the edit act on a guest of the test's own (ScratchVm).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::guest::{guest_get, guest_put};
use common::scratch_vm::ScratchVm;
use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().unwrap();
    assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn pane(session: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", session])
}

fn wait_for(session: &str, what: &str, ok: impl Fn(&str) -> bool, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let screen = pane(session);
        if ok(&screen) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for {what}; the screen shows:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_text(session: &str, needle: &str, limit: Duration) -> String {
    wait_for(session, needle, |s| s.contains(needle), limit)
}

fn keys(session: &str, keys: &[&str]) {
    let mut args = vec!["send-keys", "-t", session];
    args.extend_from_slice(keys);
    tmux(&args);
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// Start `top ARGS` on the harness in a fresh tmux session of `w`×`h`; after it ends the
/// shell prints its exit code and whether the terminal is back in cooked mode with echo.
fn start(tag: &str, home: &std::path::Path, editor: &str, w: u16, h: u16, args: &str) -> Session {
    let on = format!("-c '{}'", harness_uri());
    start_on(tag, home, editor, (w, h), &on, args)
}

/// `start` with the hosts chosen by `on` (`-c 'URI'`, `--all-hosts`, …).
fn start_on(
    tag: &str,
    home: &std::path::Path,
    editor: &str,
    (w, h): (u16, u16),
    on: &str,
    args: &str,
) -> Session {
    let exe = env!("CARGO_BIN_EXE_dismount_iso_qemu");
    let session = format!("diq-top-{tag}-{}", std::process::id());
    let cmd = format!(
        "env -u VISUAL -u LIBVIRT_DEFAULT_URI EDITOR='{editor}' TMPDIR='{h}' XDG_CACHE_HOME='{h}' \
         XDG_CONFIG_HOME='{h}' XDG_STATE_HOME='{h}' '{exe}' {on} --backend native top {args}; \
         echo TOP-EXITED-$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; \
         echo TTY-CHECKED; sleep 60",
        h = home.display(),
    );
    let (w, h) = (w.to_string(), h.to_string());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        &w,
        "-y",
        &h,
        &cmd,
    ]);
    Session(session)
}

fn tmux_present() -> bool {
    require(on_path("tmux"), "tmux", "scripts/test-all.sh installs it")
}

fn the_row<'a>(screen: &'a str, vm: &str) -> &'a str {
    screen.lines().find(|l| l.contains(vm)).unwrap_or("")
}

#[test]
fn top_in_a_real_terminal_sorts_filters_details_ejects_edits_and_quits_clean() {
    if !harness_available() || !tmux_present() {
        return;
    }
    let _serial = serial();
    let vm = ScratchVm::boot("top");
    let path = format!("/tmp/diq-top-{}.conf", std::process::id());
    guest_put(vm.name, &path, b"line one\n");
    let home = tempfile::tempdir().unwrap();
    let editor = home.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\necho 'added by the scripted editor' >> \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = start(
        "main",
        home.path(),
        &editor.display().to_string(),
        160,
        30,
        "-d 1",
    );
    let name = &s.0;

    // Start: the header, the shared guests, and rates once two samples are in.
    // The first scan waits for the frozen guest's agent (the probe deadline).
    let screen = wait_text(name, UBUNTU, Duration::from_secs(60));
    assert!(
        screen.contains("MEM USE/MAX") && screen.contains("CPU%"),
        "{screen}"
    );
    wait_for(
        name,
        "a CPU figure for the scratch VM",
        |s| the_row(s, vm.name).contains('.'),
        Duration::from_secs(20),
    );
    let screen = pane(name);
    assert!(
        screen.contains("- : "),
        "the legend explains the dashes:\n{screen}"
    );
    assert!(screen.contains("not running"), "{screen}");

    // Sort by VM name (key 1): diq-centos comes before diq-ubuntu.
    keys(name, &["1"]);
    let screen = wait_text(name, "VM▲", Duration::from_secs(5));
    let at = |s: &str, vm: &str| s.find(vm).unwrap_or(usize::MAX);
    assert!(at(&screen, CENTOS) < at(&screen, UBUNTU), "{screen}");
    keys(name, &["1"]);
    let screen = wait_text(name, "VM▼", Duration::from_secs(5));
    assert!(at(&screen, CENTOS) > at(&screen, UBUNTU), "{screen}");

    // Filter down to the scratch VM.
    keys(name, &["/"]);
    keys(name, &["-l", "diq-scratch-top"]);
    keys(name, &["Enter"]);
    let screen = wait_text(name, "filter \"diq-scratch-top\"", Duration::from_secs(5));
    assert!(
        screen.contains(vm.name) && !screen.contains(UBUNTU),
        "only the scratch VM:\n{screen}"
    );

    // Details: drives with their ISO, disks, sparklines.
    keys(name, &["Enter"]);
    let screen = wait_text(name, "Drives", Duration::from_secs(5));
    assert!(screen.contains(".iso"), "{screen}");
    assert!(screen.contains("CPU% (last"), "{screen}");
    keys(name, &["Escape"]);
    wait_text(name, "MEM USE/MAX", Duration::from_secs(5));

    // Dismount with its question: n cancels, y dismounts.
    keys(name, &["e"]);
    wait_text(name, "Dismount", Duration::from_secs(5));
    keys(name, &["n"]);
    wait_text(name, "dismount cancelled", Duration::from_secs(5));
    keys(name, &["e"]);
    wait_text(name, "y: dismount", Duration::from_secs(5));
    keys(name, &["y"]);
    let result = format!("{}: ", vm.name);
    let screen = wait_for(
        name,
        "the dismount's result line",
        |s| s.lines().any(|l| l.starts_with(&result)),
        Duration::from_secs(60),
    );
    let line = screen.lines().find(|l| l.starts_with(&result)).unwrap();
    assert!(line.contains("ejected"), "{screen}");
    let out = Command::new("virsh")
        .args(["-c", harness_uri(), "domblklist", vm.uuid])
        .output()
        .unwrap();
    assert!(!text(&out.stdout).contains(".iso"), "{}", text(&out.stdout));

    // Edit with the scripted editor: the screen is suspended, the flow asks, the screen
    // comes back.
    keys(name, &["E"]);
    wait_text(name, "Path inside the guest", Duration::from_secs(5));
    keys(name, &["-l", &path]);
    keys(name, &["Enter"]);
    let screen = wait_text(name, "[e]dit again", Duration::from_secs(30));
    assert!(screen.contains("+added by the scripted editor"), "{screen}");
    assert!(
        !screen.contains("MEM USE/MAX"),
        "the table is suspended:\n{screen}"
    );
    keys(name, &["y", "Enter"]);
    wait_text(
        name,
        "Press Enter to go back to top",
        Duration::from_secs(30),
    );
    keys(name, &["Enter"]);
    let screen = wait_text(name, "MEM USE/MAX", Duration::from_secs(5));
    assert!(screen.contains("done"), "the result line: {screen}");
    assert_eq!(
        guest_get(vm.name, &path),
        b"line one\nadded by the scripted editor\n"
    );

    // Help, then quit: the terminal is back as it was.
    keys(name, &["?"]);
    wait_text(name, "dismount the VM's disc", Duration::from_secs(5));
    keys(name, &["Escape"]);
    keys(name, &["q"]);
    let screen = wait_text(name, "TTY-CHECKED", Duration::from_secs(10));
    assert!(screen.contains("TOP-EXITED-0"), "{screen}");
    assert!(
        screen.contains("icanon echo"),
        "cooked mode with echo: {screen}"
    );
    assert!(
        !screen.contains("MEM USE/MAX"),
        "the alternate screen is gone:\n{screen}"
    );
}

/// The pid of `top` under the session's shell.
fn top_pid(session: &str) -> Option<u32> {
    let shell = tmux(&["list-panes", "-t", session, "-F", "#{pane_pid}"]);
    let shell = shell.trim();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p: &u32| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("dismount_iso_qemu"))
        })
}

#[test]
fn sigterm_and_a_small_terminal_leave_the_terminal_clean() {
    if !harness_available() || !tmux_present() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let s = start("term", home.path(), "true", 80, 24, "-d 1 --sort mem");
    let name = &s.0;
    let screen = wait_text(name, UBUNTU, Duration::from_secs(30));
    assert!(screen.contains("MEM USE/MAX▼"), "{screen}");
    assert!(
        !screen.contains("HOST%"),
        "80 columns drop the lowest priorities:\n{screen}"
    );
    // A resize redraws at the new width.
    tmux(&["resize-window", "-t", name, "-x", "200", "-y", "40"]);
    wait_text(name, "HOST%", Duration::from_secs(5));
    let pid = top_pid(name).expect("top runs under the pane's shell");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let screen = wait_text(name, "TTY-CHECKED", Duration::from_secs(10));
    assert!(screen.contains("TOP-EXITED-0"), "{screen}");
    assert!(screen.contains("icanon echo"), "{screen}");
}

#[test]
fn batch_records_match_their_schema_on_both_backends() {
    if !harness_available() {
        return;
    }
    const FIELDS: [&str; 18] = [
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
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = tool_on_harness(home.path(), backend)
            .args([
                "top",
                "--batch",
                "--iterations",
                "3",
                "-d",
                "1",
                "--format",
                "jsonl",
            ])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "three intervals"
        );
        let stdout = text(&out.stdout);
        let records: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
            .collect();
        for r in &records {
            assert_eq!(r["schema_version"], 1);
            assert_eq!(r.as_object().unwrap().len(), FIELDS.len() + 1, "{r}");
            for f in FIELDS {
                assert!(r.get(f).is_some(), "{backend}: {f} missing in {r}");
            }
        }
        let of = |vm: &str, it: u64| {
            records
                .iter()
                .find(|r| r["vm"] == vm && r["iteration"] == it)
                .unwrap_or_else(|| {
                    panic!("{backend}: no record of {vm} in iteration {it}:\n{stdout}")
                })
        };
        let mut disk_figures = 0;
        for it in [1, 2, 3] {
            let ubuntu = of(UBUNTU, it);
            assert_eq!(ubuntu["state"], "running");
            let cpu = ubuntu["cpu_pct"]
                .as_f64()
                .expect("a running VM has a CPU figure");
            assert!((0.0..=100.5).contains(&cpu), "{ubuntu}");
            // Another client's job on the VM (the terminal test's top runs alongside)
            // makes libvirt skip its disk figures, and top never waits: the record says
            // so, and the interval after it has no earlier counters to compare with
            // (for the first interval, the unprinted sample before it was the busy one).
            let why = &ubuntu["missing"]["disk_read_bps"];
            let after_busy = it == 1 || of(UBUNTU, it - 1)["missing"]["disk_read_bps"] == "vm-busy";
            if ubuntu["disk_read_bps"].is_u64() {
                disk_figures += 1;
            } else {
                assert!(
                    why == "vm-busy" || (why == "first-sample" && after_busy),
                    "{backend}: {ubuntu}"
                );
            }
            // Only the data guest (diq-centos) has a network card.
            assert_eq!(ubuntu["missing"]["net_rx_bps"], "no-nic", "{ubuntu}");
            let off = of(WIN_OFF, it);
            assert_eq!(off["state"], "shut_off");
            assert!(off["cpu_pct"].is_null());
            assert_eq!(off["missing"]["cpu_pct"], "not-running");
            assert_eq!(of(PAUSED, it)["missing"]["mem_used_kib"], "paused");
            // Absent agents are not remembered, so each interval asks again; when the
            // previous interval's probe has not returned yet (a loaded libvirtd), the
            // guest counts as timed out rather than being asked twice at once.
            let reason = &of(NO_AGENT, it)["missing"]["os"];
            assert!(
                reason == "no-agent" || reason == "agent-timeout",
                "{backend}: {reason}"
            );
        }
        assert!(
            disk_figures > 0,
            "{backend}: no disk figure in 3 intervals:\n{stdout}"
        );
        let t1 = of(UBUNTU, 1)["time"].as_f64().unwrap();
        let t2 = of(UBUNTU, 2)["time"].as_f64().unwrap();
        assert!(
            (0.8..3.0).contains(&(t2 - t1)),
            "one interval apart: {t1} {t2}"
        );

        // CSV: the header, then one line per VM per interval, every line as wide.
        let out = tool_on_harness(home.path(), backend)
            .args([
                "top",
                "--batch",
                "--iterations",
                "1",
                "-d",
                "1",
                "--sort",
                "vm",
            ])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        let csv = text(&out.stdout);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(FIELDS.join(",").as_str()));
        let rows: Vec<&str> = lines.collect();
        assert!(rows.len() >= 8, "{csv}");
        let names: Vec<&str> = rows.iter().map(|r| r.split(',').nth(2).unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "--sort vm");
    }
}

#[test]
fn top_without_a_terminal_says_to_use_batch() {
    let home = tempfile::tempdir().unwrap();
    let out = tool(home.path())
        .args(["-c", "test:///default", "top"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--batch"), "{err}");
    let out = tool(home.path())
        .args(["-c", "test:///default", "top", "--batch", "--sort", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown sort field"),
        "{}",
        text(&out.stderr)
    );
    let out = tool(home.path())
        .args(["-c", "test:///default", "top", "--batch", "-d", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The ISO in `vm`'s first drive on the harness, from `isos --json`.
fn iso_of(home: &std::path::Path, vm: &str) -> Option<String> {
    let out = tool_on_harness(home, "native")
        .args(["isos", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = doc["vms"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == vm)?
        .clone();
    let d = &v["drives"][0];
    ["live", "config"]
        .iter()
        .find_map(|k| d[k]["source"].as_str().map(str::to_string))
}

fn mount_on_harness(home: &std::path::Path, vm: &str, iso: &str) {
    let out = tool_on_harness(home, "native")
        .args(["mount", vm, iso])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount: {}", text(&out.stderr));
}

#[test]
fn top_over_several_hosts_names_each_and_acts_on_the_host_shown() {
    if !harness_available() || !tmux_present() {
        return;
    }
    const OFF: &str = "diq-media-off";
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    // The shut-off media guest holds a disc for the dismount (what it held is put back).
    let had = iso_of(home.path(), OFF);
    let disc = had
        .clone()
        .or_else(|| iso_of(home.path(), UBUNTU))
        .expect("the harness's ISO");
    if had.is_none() {
        mount_on_harness(home.path(), OFF, &disc);
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = home.path().join("dismount_iso_qemu");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[hosts.harness]\nuri = {:?}\n\n[hosts.test]\nuri = \"test:///default\"\n\n\
             [hosts.dead]\nuri = \"qemu+tcp://127.0.0.1:{dead}/system\"\n",
            harness_uri()
        ),
    )
    .unwrap();
    let s = start_on(
        "hosts",
        home.path(),
        "true",
        (160, 30),
        "--all-hosts --connect-timeout 3",
        "-d 1",
    );
    let name = &s.0;
    let screen = wait_text(name, UBUNTU, Duration::from_secs(60));
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].contains("3 hosts"), "{screen}");
    assert!(
        lines[1].starts_with("HOST "),
        "the HOST column first: {screen}"
    );
    assert!(the_row(&screen, UBUNTU).starts_with("harness "), "{screen}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("test ") && l.contains(" test ")),
        "the test driver's VM on its host: {screen}"
    );
    assert!(
        screen.contains("host dead: cannot be opened: cannot reach libvirt"),
        "the host that could not be opened, on the status line: {screen}"
    );

    // Filter by host, then the details name the VM as HOST:VM.
    keys(name, &["/"]);
    keys(name, &["-l", "test"]);
    keys(name, &["Enter"]);
    let screen = wait_for(
        name,
        "only the test host's VM",
        |s| !s.contains(UBUNTU) && s.contains("filter \"test\""),
        Duration::from_secs(5),
    );
    assert!(screen.contains("1 VMs"), "{screen}");
    keys(name, &["Enter"]);
    wait_text(name, "test:test  running", Duration::from_secs(5));
    // An Esc and the next key close together read as Alt+key: let each Esc stand alone.
    let escape = || {
        keys(name, &["Escape"]);
        std::thread::sleep(Duration::from_millis(300));
    };
    escape();

    // A dismount goes to the host the row is on, and its line says which.
    // Esc in the filter clears it.
    keys(name, &["/"]);
    escape();
    keys(name, &["/"]);
    keys(name, &["-l", OFF]);
    keys(name, &["Enter"]);
    wait_for(
        name,
        "the media guest alone",
        |s| the_row(s, OFF).starts_with("harness ") && !s.contains(UBUNTU),
        Duration::from_secs(5),
    );
    keys(name, &["e"]);
    wait_text(
        name,
        &format!("from harness:{OFF}?"),
        Duration::from_secs(5),
    );
    keys(name, &["y"]);
    let screen = wait_text(
        name,
        &format!("harness:{OFF}: sda ejected"),
        Duration::from_secs(30),
    );
    assert!(
        screen.contains("(config)"),
        "a shut-off VM's definition: {screen}"
    );
    assert_eq!(
        iso_of(home.path(), OFF),
        None,
        "the disc is out on the harness"
    );

    keys(name, &["q"]);
    let screen = wait_text(name, "TTY-CHECKED", Duration::from_secs(10));
    assert!(
        screen.contains("TOP-EXITED-1"),
        "a host could not be opened: exit 1\n{screen}"
    );
    assert!(screen.contains("icanon echo"), "{screen}");
    assert!(
        screen.contains("error: host dead"),
        "the host's error line stays on the terminal: {screen}"
    );
    if let Some(iso) = had {
        mount_on_harness(home.path(), OFF, &iso);
    }
}
