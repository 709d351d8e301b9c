//! End-to-end: the harness as a remote host. An sshd of the tests' own
//! (`scripts/test-sshd.sh`) makes `qemu+ssh://` a real remote transport to the harness's
//! libvirtd; a listener that accepts and never answers is a host that hangs; a key sshd
//! refuses and a host key nobody knows are the two ssh refusals. Both backends; nothing
//! may prompt, with stdin closed and inside a real terminal.

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::sshd::{SilentHost, TestSshd};
use common::*;

/// The connect timeout the hanging-host cases give the tool, and what they may take.
const CONNECT_TIMEOUT_S: u64 = 2;
const SLACK: Duration = Duration::from_secs(1);
/// What an ssh refusal may take: one ssh handshake on the loopback, a few processes.
const REFUSAL_LIMIT: Duration = Duration::from_secs(5);

/// The harness lock, the tests' sshd and a home; `None` without the harness (or the
/// sshd, outside CI).
fn setup() -> Option<(
    std::sync::MutexGuard<'static, ()>,
    TestSshd,
    tempfile::TempDir,
)> {
    let serial = serial();
    if !harness_available() {
        return None;
    }
    let sshd = TestSshd::start()?;
    Some((serial, sshd, tempfile::tempdir().unwrap()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tool with stdin closed on `uri` and `env`, killed (a failure) after 60 s:
/// (output, wall time).
fn run_env(
    home: &tempfile::TempDir,
    uri: &str,
    backend: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = tool_process(home.path())
        .args(["-c", uri, "--backend", backend])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = r.read_to_end(&mut all);
            all
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{args:?} on {uri} did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t0.elapsed();
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (out, took)
}

fn run(home: &tempfile::TempDir, uri: &str, backend: &str, args: &[&str]) -> (Output, Duration) {
    run_env(home, uri, backend, args, &[])
}

fn scan(home: &tempfile::TempDir, uri: &str, backend: &str) -> (Value, Duration) {
    let (out, took) = run(home, uri, backend, &["scan", "--json", "--no-cache"]);
    assert!(
        out.status.success(),
        "{backend} scan of {uri}: {}",
        text(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    // The URI as the user wrote it: never the no_tty=1 the tool adds for ssh.
    let reported = doc["uri"].as_str().unwrap_or_default();
    assert!(!reported.contains("no_tty"), "{backend}: {reported}");
    (doc, took)
}

/// name → (state, OS) of every harness guest in a scan (`diq-` names: other tests' guests
/// come and go).
fn guests(doc: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = doc["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["name"].as_str().is_some_and(|n| n.starts_with("diq-")))
        .filter(|vm| !vm["name"].as_str().unwrap_or("").starts_with("diq-media"))
        .map(|vm| {
            (
                vm["name"].as_str().unwrap_or("").to_string(),
                vm["state"].to_string(),
                vm["os"].to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The failure of an open: exit 2, nothing on stdout, exactly one line on stderr that
/// contains each of `want`; returns the line.
fn one_line(out: &Output, want: &[&str], what: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout {}",
        text(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err:?}");
    assert!(
        err.starts_with("dismount_iso_qemu: error: "),
        "{what}: {err}"
    );
    for w in want {
        assert!(err.contains(w), "{what}: {w:?} missing from {err}");
    }
    assert!(
        !err.trim_end().chars().any(char::is_control),
        "{what}: control characters in {err:?}"
    );
    err
}

#[test]
fn scan_isos_and_cat_over_ssh_match_the_local_socket_on_both_backends() {
    let Some((_serial, sshd, home)) = setup() else {
        return;
    };
    // Through nc and the named socket, and through virt-ssh-helper (no socket named).
    let remote = [
        ("nc", sshd.harness_uri()),
        ("virt-ssh-helper", sshd.uri(&sshd.ssh, &sshd.key, false)),
    ];
    for backend in BACKENDS {
        let (local, local_took) = scan(&home, harness_uri(), backend);
        let want = guests(&local);
        assert!(
            want.iter()
                .any(|(n, _, os)| n == CENTOS && os.contains("CentOS Stream")),
            "{backend}: local scan has no CentOS answer: {want:?}"
        );
        for (how, uri) in &remote {
            let (doc, took) = scan(&home, uri, backend);
            let mut got = guests(&doc);
            // A healthy agent may miss the deadline once on a loaded machine: ask again.
            if got != want {
                eprintln!("{backend} over ssh ({how}) differed once, scanning again: {got:?}");
                got = guests(&scan(&home, uri, backend).0);
            }
            assert_eq!(got, want, "{backend} over ssh ({how}) vs the local socket");
            eprintln!(
                "TIMING {backend}: scan --json --no-cache over ssh ({how}) {:.2}s, local socket {:.2}s",
                took.as_secs_f64(),
                local_took.as_secs_f64()
            );
        }
        let uri = sshd.harness_uri();

        let (local_isos, _) = run(&home, harness_uri(), backend, &["isos"]);
        let (isos, took) = run(&home, &uri, backend, &["isos"]);
        assert!(
            isos.status.success(),
            "{backend} isos: {}",
            text(&isos.stderr)
        );
        assert!(local_isos.status.success());
        for vm in [UBUNTU, CENTOS, WIN_OFF] {
            assert_eq!(
                text(&isos.stdout).contains(vm),
                text(&local_isos.stdout).contains(vm),
                "{backend} isos over ssh: {vm}"
            );
        }
        eprintln!("TIMING {backend}: isos over ssh {:.2}s", took.as_secs_f64());

        let (local_cat, _) = run(
            &home,
            harness_uri(),
            backend,
            &["cat", CENTOS, "/etc/os-release"],
        );
        let (cat, took) = run(&home, &uri, backend, &["cat", CENTOS, "/etc/os-release"]);
        assert!(cat.status.success(), "{backend} cat: {}", text(&cat.stderr));
        assert!(local_cat.status.success(), "{}", text(&local_cat.stderr));
        assert!(
            text(&cat.stdout).contains("CentOS Stream"),
            "{}",
            text(&cat.stdout)
        );
        assert_eq!(
            cat.stdout, local_cat.stdout,
            "{backend}: cat over ssh is not byte-exact"
        );
        eprintln!("TIMING {backend}: cat over ssh {:.2}s", took.as_secs_f64());

        // Agent calls one after another share the one connection: over ssh each further
        // connection would be another handshake (and its key exchange's CPU).
        if backend == "native" {
            let log = home.path().join("ssh-runs");
            let counting = home.path().join("counting-ssh");
            std::fs::write(
                &counting,
                format!(
                    "#!/bin/sh\necho run >> '{}'\nexec '{}' \"$@\"\n",
                    log.display(),
                    sshd.ssh.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &counting,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let uri = sshd.uri(&counting, &sshd.key, true);
            let (cat, _) = run(&home, &uri, backend, &["cat", CENTOS, "/etc/os-release"]);
            assert!(cat.status.success(), "{}", text(&cat.stderr));
            let runs = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .count();
            assert_eq!(runs, 1, "cat over ssh opened {runs} ssh connections");
        }
    }
}

#[test]
fn ssh_refusals_are_one_line_that_says_what_to_do() {
    let Some((_serial, sshd, home)) = setup() else {
        return;
    };
    let cases = [
        (
            "unknown host key",
            sshd.uri(&sshd.ssh_unknown_host, &sshd.key, true),
            vec!["known_hosts", "ssh-keyscan -p", "127.0.0.1"],
        ),
        (
            "refused key",
            sshd.uri(&sshd.ssh, &sshd.other_key, true),
            vec!["keyfile=", "authentication", "diq-harness@127.0.0.1"],
        ),
        (
            "closed port",
            {
                // A port nobody listens on: bound, then let go.
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                format!(
                    "qemu+ssh://{}@127.0.0.1:{port}/session?keyfile={}&command={}",
                    sshd.user,
                    sshd.key.display(),
                    sshd.ssh.display()
                )
            },
            vec!["ssh cannot reach the host", "is the host up"],
        ),
    ];
    for backend in BACKENDS {
        for (what, uri, want) in &cases {
            let (out, took) = run(&home, uri, backend, &["scan"]);
            let line = one_line(&out, want, &format!("{backend} {what}"));
            assert!(
                !line.contains("no_tty"),
                "the line names the URI as given: {line}"
            );
            assert!(took < REFUSAL_LIMIT, "{backend} {what}: took {took:?}");
            eprintln!(
                "TIMING {backend}: {what} refused in {:.2}s",
                took.as_secs_f64()
            );
        }
    }
}

#[test]
fn hanging_hosts_end_within_the_connect_timeout() {
    let Some((_serial, sshd, home)) = setup() else {
        return;
    };
    let silent = SilentHost::start();
    let port = silent.addr.port();
    let tcp = format!("qemu+tcp://127.0.0.1:{port}/system");
    let ssh = format!(
        "qemu+ssh://{}@127.0.0.1:{port}/system?keyfile={}&command={}",
        sshd.user,
        sshd.key.display(),
        sshd.ssh.display()
    );
    let limit = Duration::from_secs(CONNECT_TIMEOUT_S) + SLACK;
    for backend in BACKENDS {
        for (what, uri) in [("tcp", &tcp), ("ssh", &ssh)] {
            let before = silent.connections();
            let (out, took) = run(
                &home,
                uri,
                backend,
                &["--connect-timeout", &CONNECT_TIMEOUT_S.to_string(), "scan"],
            );
            one_line(
                &out,
                &[
                    &format!("127.0.0.1:{port}"),
                    &format!("within {CONNECT_TIMEOUT_S} s"),
                    "--connect-timeout",
                ],
                &format!("{backend} {what}"),
            );
            assert!(
                silent.connections() > before,
                "{backend} {what}: never connected"
            );
            assert!(took < limit, "{backend} {what}: took {took:?}");
            eprintln!(
                "TIMING {backend}: hanging {what} host ended after {:.2}s (connect timeout {CONNECT_TIMEOUT_S} s)",
                took.as_secs_f64()
            );
        }
    }
    // From the environment.
    let (out, took) = run_env(
        &home,
        &tcp,
        "native",
        &["scan"],
        &[("DISMOUNT_ISO_QEMU_CONNECT_TIMEOUT", "3")],
    );
    one_line(
        &out,
        &["within 3 s"],
        "connect timeout from the environment",
    );
    assert!(took < Duration::from_secs(3) + SLACK, "took {took:?}");
}

/// The tool in a new session whose controlling terminal is a fresh pseudo-terminal (so
/// ssh could open /dev/tty and ask): (exit code, everything the terminal showed, time);
/// killed and a failure after `limit`.
fn in_terminal(
    home: &tempfile::TempDir,
    args: &[&str],
    limit: Duration,
) -> (i32, String, Duration) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the given places; the other arguments
    // may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = tool_process(home.path());
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: between fork and exec only async-signal-safe calls: a new session, then the
    // terminal on stdin becomes its controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // our copies of the terminal's descriptors
    let mut reader = std::fs::File::from(master);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last holder of the terminal's other side is gone.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(all.clone());
        }
    });
    let end = t0 + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            let shown = rx.try_iter().last().unwrap_or_default();
            panic!(
                "{args:?} waited in a terminal for {limit:?}; it showed: {}",
                text(&shown)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let shown = rx.try_iter().last().unwrap_or_default();
    (code, text(&shown), took)
}

#[test]
fn nothing_prompts_even_in_a_terminal() {
    let Some((_serial, sshd, home)) = setup() else {
        return;
    };
    let cases = [
        (
            "unknown host key",
            sshd.uri(&sshd.ssh_unknown_host, &sshd.key, true),
            "known_hosts",
        ),
        // sshd offers password authentication: an ssh that may prompt would ask here.
        (
            "refused key",
            sshd.uri(&sshd.ssh, &sshd.other_key, true),
            "keyfile=",
        ),
    ];
    for backend in BACKENDS {
        for (what, uri, want) in &cases {
            let (code, shown, took) = in_terminal(
                &home,
                &["-c", uri, "--backend", backend, "scan"],
                Duration::from_secs(15),
            );
            assert_eq!(code, 2, "{backend} {what}: {shown}");
            assert!(shown.contains(want), "{backend} {what}: {shown}");
            for prompt in ["(yes/no", "password:", "assword for", "passphrase"] {
                assert!(
                    !shown.contains(prompt),
                    "{backend} {what} prompted: {shown}"
                );
            }
            assert!(took < REFUSAL_LIMIT, "{backend} {what}: {took:?}");
            eprintln!(
                "TIMING {backend}: {what} in a terminal ended after {:.2}s without a prompt",
                took.as_secs_f64()
            );
        }
        // And the real host through the terminal: works, asks nothing.
        let (code, shown, took) = in_terminal(
            &home,
            &["-c", &sshd.harness_uri(), "--backend", backend, "isos"],
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "{backend}: {shown}");
        assert!(shown.contains(CENTOS), "{backend}: {shown}");
        eprintln!(
            "TIMING {backend}: isos over ssh in a terminal {:.2}s",
            took.as_secs_f64()
        );
    }
}

/// The native backend's keepalive: a link that goes silent under an open connection (its
/// ssh stopped) fails the next call within keepalive's 5 s × 3 instead of hanging it.
#[cfg(feature = "native")]
#[test]
fn a_dead_link_is_noticed_by_keepalive() {
    use dismount_iso_qemu::hypervisor::{self, Backend};
    let Some((_serial, sshd, _home)) = setup() else {
        return;
    };
    let hv = hypervisor::open(Backend::Native, Some(&sshd.harness_uri())).expect("open over ssh");
    assert!(hv.list_domains().expect("listing over ssh").len() >= 8);
    // libvirt runs ssh as our child; stopping it leaves the socket open and silent.
    let ours = std::process::id().to_string();
    let ssh_children: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid …"
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            stat.contains("(ssh)") && after.split(' ').nth(1) == Some(ours.as_str())
        })
        .collect();
    assert!(!ssh_children.is_empty(), "no ssh child of ours");
    for pid in &ssh_children {
        // SAFETY: a signal to a child process of ours.
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(hv.list_domains().map(|d| d.len()));
    });
    let outcome = rx.recv_timeout(Duration::from_secs(60));
    let took = t0.elapsed();
    for pid in &ssh_children {
        // SAFETY: as above; the link is given up, so the children may go.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
            libc::kill(*pid, libc::SIGCONT);
        }
    }
    match outcome {
        Ok(Err(e)) => {
            assert!(e.is_connection(), "{e}");
            eprintln!(
                "TIMING native: a silent link failed the next call after {:.2}s: {e}",
                took.as_secs_f64()
            );
        }
        Ok(Ok(n)) => panic!("listing over a stopped ssh answered {n} domains"),
        Err(_) => panic!("a call over a silent link still hung after {took:?}"),
    }
    assert!(
        took < Duration::from_secs(30),
        "noticed only after {took:?}"
    );
}

/// A fleet opens every host at once: six names of the ssh host, each open taking a few
/// round trips and ssh's key exchange, all overlapping. (Opens in flight once counted as
/// hung ones, so the fifth failed at once with a timeout it never waited for.)
#[test]
fn a_fleet_opens_every_ssh_host_at_once() {
    let Some((_serial, sshd, home)) = setup() else {
        return;
    };
    let dir = home.path().join("dismount_iso_qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = String::new();
    for i in 1..=6 {
        config.push_str(&format!("[hosts.s{i}]\nuri = {:?}\n", sshd.harness_uri()));
    }
    std::fs::write(dir.join("config.toml"), config).unwrap();
    for backend in BACKENDS {
        let t0 = Instant::now();
        let out = tool_process(home.path())
            .args([
                "--backend",
                backend,
                "--connect-timeout",
                "20",
                "--all-hosts",
            ])
            .args(["scan", "--json"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = t0.elapsed();
        let doc = ok_json(&out, backend);
        let hosts = doc["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 6);
        assert!(hosts.iter().all(|h| h["ok"] == true), "{hosts:?}");
        for i in 1..=6 {
            let host = format!("s{i}");
            assert!(
                doc["vms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["host"] == host.as_str() && v["name"] == CENTOS),
                "{host} has no {CENTOS}"
            );
        }
        eprintln!("TIMING {backend}: fleet scan of 6 ssh hosts opened at once: {took:?}");
    }
}
