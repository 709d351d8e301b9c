//! The virsh adapter's process handling, against a fake `virsh` shell script that each
//! test writes into its own temporary directory. The script records its argument vector
//! (NUL-separated), its environment and its stdin per call, then does what the test
//! scripted: print fixture text, exit with a code, or hang.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dismount_iso_qemu::hypervisor::virsh::VirshHypervisor;
use dismount_iso_qemu::hypervisor::{ChangeScope, HvError, Hypervisor, XmlScope};

struct FakeVirsh {
    dir: tempfile::TempDir,
}

impl FakeVirsh {
    /// `body` runs after the recording; `$last` holds the last argument. A `uri` call
    /// answers `fake:///uri` unless `body` handles it first.
    fn new(body: &str) -> FakeVirsh {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec");
        fs::create_dir(&rec).unwrap();
        let script = format!(
            r#"#!/bin/sh
rec='{rec}'
n=$(ls "$rec" | grep -c '^argv\.')
printf '%s\0' "$@" > "$rec/argv.$n"
env > "$rec/env.$n"
echo $$ > "$rec/pid.$n"
for last; do :; done
{body}
if [ "$last" = uri ]; then echo 'fake:///uri'; exit 0; fi
if [ "$*" != "${{*%list --all --uuid --name}}" ]; then cat "$rec/../domains" 2>/dev/null; exit 0; fi
exit 0
"#,
            rec = rec.display(),
        );
        let path = dir.path().join("virsh");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        FakeVirsh { dir }
    }

    /// The domains `list --all --uuid --name` prints; the i-th gets UUID `uuid(i)`.
    fn with_domains(self, names: &[&str]) -> FakeVirsh {
        let text: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{} {n}\n", uuid(i)))
            .collect();
        fs::write(self.dir.path().join("domains"), text).unwrap();
        self
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("virsh")
    }

    fn rec(&self, what: &str, call: usize) -> PathBuf {
        self.dir.path().join("rec").join(format!("{what}.{call}"))
    }

    fn argv(&self, call: usize) -> Vec<String> {
        let raw = fs::read(self.rec("argv", call)).unwrap();
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    fn env(&self, call: usize) -> String {
        fs::read_to_string(self.rec("env", call)).unwrap()
    }

    fn calls(&self) -> usize {
        fs::read_dir(self.dir.path().join("rec"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("argv.")
            })
            .count()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The UUID the fake virsh gives its i-th domain.
fn uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/virsh/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Alive and not a zombie (an orphan may wait a while for a reaper; it runs no more).
fn process_alive(pid_file: &Path) -> bool {
    let pid = fs::read_to_string(pid_file).unwrap();
    match fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => {
            let state = stat.rsplit(") ").next().unwrap_or("").chars().next();
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

#[test]
fn argv_is_exact_locale_is_c_and_c_flag_only_with_a_uri() {
    // A name with blanks, quotes and a semicolon — and one that is another domain's id.
    let name = "my vm; rm -rf / 'x' \"y\" ü";
    let fake = FakeVirsh::new(
        r#"case "$1$2$3" in *dumpxml*) echo "<domain><name>x</name></domain>"; exit 0;; esac"#,
    )
    .with_domains(&["1", name]);
    let hv = VirshHypervisor::with_program(fake.program(), Some("qemu:///system")).unwrap();
    assert_eq!(hv.uri(), "fake:///uri");
    assert_eq!(fake.argv(0), ["-c", "qemu:///system", "uri"]);
    let env = fake.env(0);
    assert!(env.lines().any(|l| l == "LC_ALL=C"), "{env}");
    assert!(env.lines().any(|l| l == "LANG=C"), "{env}");

    // The domain is found by its name in the listing and addressed by its UUID: virsh
    // would read a name that is a number as a domain id first.
    hv.domain_xml(name, XmlScope::Persistent).unwrap();
    assert_eq!(
        fake.argv(1),
        ["-c", "qemu:///system", "list", "--all", "--uuid", "--name"]
    );
    assert_eq!(
        fake.argv(2),
        [
            "-c",
            "qemu:///system",
            "dumpxml",
            "--domain",
            &uuid(1),
            "--inactive"
        ]
    );
    hv.domain_xml("1", XmlScope::Current).unwrap();
    assert_eq!(
        fake.argv(3),
        ["-c", "qemu:///system", "dumpxml", "--domain", &uuid(0)],
        "the remembered listing is reused"
    );
    assert_eq!(
        hv.domain_xml("nope", XmlScope::Current),
        Err(HvError::NoSuchDomain("nope".into()))
    );

    let fake2 = FakeVirsh::new("");
    let hv2 = VirshHypervisor::with_program(fake2.program(), None).unwrap();
    assert_eq!(fake2.argv(0), ["uri"]);
    assert_eq!(hv2.processes_spawned(), 1);
}

#[test]
fn stdin_is_closed_when_unused() {
    // `cat` would block forever on an inherited terminal or an open pipe.
    let fake = FakeVirsh::new(r#"if [ "$last" = uri ]; then cat > "$rec/stdin"; fi"#);
    let started = Instant::now();
    VirshHypervisor::with_program(fake.program(), None).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fs::read_to_string(fake.path("rec/stdin")).unwrap(), "");
}

#[test]
fn connection_errors_are_classified_from_stderr() {
    for (fixture_name, expect) in [
        ("err_socket_missing.txt", "unreachable"),
        ("err_connection_refused.txt", "unreachable"),
        ("err_permission_denied.txt", "permission"),
        ("err_no_driver.txt", "bad uri"),
        ("err_no_driver_name.txt", "bad uri"),
    ] {
        let fake = FakeVirsh::new(&format!("cat '{}' >&2; exit 1", fixture(fixture_name)));
        let err = VirshHypervisor::with_program(fake.program(), Some("qemu:///system"))
            .err()
            .unwrap();
        let got = match &err {
            HvError::Unreachable { .. } => "unreachable",
            HvError::PermissionDenied { .. } => "permission",
            HvError::BadUri { .. } => "bad uri",
            _ => "other",
        };
        assert_eq!(got, expect, "{fixture_name}: {err:?}");
        let text = err.to_string();
        assert!(!text.contains('\n') && !text.contains("error: "), "{text}");
    }
}

#[test]
fn missing_virsh_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let err = VirshHypervisor::with_program(dir.path().join("no-virsh-here"), None)
        .err()
        .unwrap();
    match err {
        HvError::BackendUnavailable("virsh", hint) => assert!(hint.contains("libvirt-clients")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_hung_virsh_is_killed_at_the_limit() {
    let fake = FakeVirsh::new(
        r#"case "$*" in *dumpxml*|*qemu-agent-command*) sleep 30 & echo $! > "$rec/sleeper"; wait; exit 0;; esac"#,
    )
    .with_domains(&["vm"]);
    let hv =
        VirshHypervisor::with_program_and_limit(fake.program(), None, Duration::from_millis(500))
            .unwrap();
    let started = Instant::now();
    let err = hv.domain_xml("vm", XmlScope::Current).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, HvError::Failed { .. }), "{err:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The script and the sleep it started (same process group) are both gone.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!process_alive(&fake.rec("pid", 2)));
    assert!(!process_alive(&fake.path("rec/sleeper")));

    // An agent call that hangs is the agent's timeout: its own seconds plus slack.
    let started = Instant::now();
    let err = hv
        .agent_command(
            "vm",
            &serde_json::json!({"execute": "guest-ping"}),
            Duration::from_millis(200),
        )
        .unwrap_err();
    assert_eq!(err, HvError::AgentTimeout("vm".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn small_agent_command_is_an_argument() {
    let fake = FakeVirsh::new(
        r#"case "$*" in *qemu-agent-command*) printf '{"return":{"pong":1}}\n'; exit 0;; esac"#,
    )
    .with_domains(&["vm 1"]);
    let hv = VirshHypervisor::with_program(fake.program(), Some("test:///x")).unwrap();
    let cmd = serde_json::json!({"execute": "guest-ping"});
    let reply = hv
        .agent_command("vm 1", &cmd, Duration::from_millis(2500))
        .unwrap();
    assert_eq!(reply, serde_json::json!({"pong": 1}));
    assert_eq!(
        fake.argv(2),
        [
            "-c",
            "test:///x",
            "qemu-agent-command",
            "--domain",
            &uuid(0),
            "--timeout",
            "3",
            r#"{"execute":"guest-ping"}"#
        ]
    );
    hv.agent_command("vm 1", &cmd, Duration::from_millis(1))
        .unwrap();
    assert_eq!(fake.argv(3)[6], "1");
}

/// Emulates virsh reading commands on stdin: readline echoes the prompt and the line,
/// output loses its final newline, `echo --err` goes to stderr as `error: ...`.
const STDIN_VIRSH: &str = r#"case "$*" in *-q*)
  cat > "$rec/stdin"
  while IFS= read -r line; do
    case "$line" in
      "echo --err "*) m=$(printf '%s' "${line#echo --err }" | tr -d "'"); printf 'virsh # %s\n' "$line"; printf 'error: %s\n' "$m" >&2;;
      "echo "*) m=$(printf '%s' "${line#echo }" | tr -d "'"); printf 'virsh # %s\n%s' "$line" "$m";;
      "qemu-agent-command "*) printf 'virsh # %s\n' "$line"; REPLY_OR_ERROR;;
    esac
  done < "$rec/stdin"
  printf 'virsh # \n'
  exit 0;;
esac"#;

fn big_write() -> serde_json::Value {
    serde_json::json!({
        "execute": "guest-file-write",
        "arguments": {"handle": 1000, "buf-b64": "QUJD".repeat(50 * 1024)}
    })
}

#[test]
fn large_agent_command_goes_through_stdin_not_argv() {
    let fake = FakeVirsh::new(&STDIN_VIRSH.replace(
        "REPLY_OR_ERROR",
        r#"printf '{"return":{"count":153600,"eof":false}}'"#,
    ))
    .with_domains(&["it's vm"]);
    let hv = VirshHypervisor::with_program(fake.program(), Some("test:///x")).unwrap();
    let cmd = big_write();
    let reply = hv
        .agent_command("it's vm", &cmd, Duration::from_secs(5))
        .unwrap();
    assert_eq!(reply["count"], 153_600);
    let argv = fake.argv(2);
    assert_eq!(argv, ["-c", "test:///x", "-q"]);
    let stdin = fs::read_to_string(fake.path("rec/stdin")).unwrap();
    let json = cmd.to_string();
    assert!(stdin.contains(&json));
    assert!(stdin.contains(&format!("--domain '{}' --timeout 5 ", uuid(0))));
}

#[test]
fn large_agent_command_failure_is_classified() {
    let fake = FakeVirsh::new(&STDIN_VIRSH.replace(
        "REPLY_OR_ERROR",
        r#"echo "error: Guest agent is not responding: QEMU guest agent is not connected" >&2"#,
    ))
    .with_domains(&["vm"]);
    let hv = VirshHypervisor::with_program(fake.program(), None).unwrap();
    assert_eq!(
        hv.agent_command("vm", &big_write(), Duration::from_secs(5)),
        Err(HvError::AgentNotConnected("vm".into()))
    );
}

#[test]
fn agent_errors_are_classified() {
    for (stderr, expect) in [
        (
            "error: Guest agent is not responding: QEMU guest agent is not connected",
            HvError::AgentNotConnected("vm".into()),
        ),
        (
            "error: Requested operation is not valid: domain is not running",
            HvError::DomainNotRunning("vm".into()),
        ),
        (
            "error: failed to get domain 'vm'",
            HvError::NoSuchDomain("vm".into()),
        ),
        (
            "error: Guest agent is not responding: Guest agent not available for now",
            HvError::AgentTimeout("vm".into()),
        ),
    ] {
        let fake = FakeVirsh::new(&format!(
            r#"case "$*" in *qemu-agent-command*) echo "{stderr}" >&2; exit 1;; esac"#
        ))
        .with_domains(&["vm"]);
        let hv = VirshHypervisor::with_program(fake.program(), None).unwrap();
        let got = hv.agent_command(
            "vm",
            &serde_json::json!({"execute": "guest-ping"}),
            Duration::from_secs(1),
        );
        assert_eq!(got, Err(expect));
    }
}

#[test]
fn update_device_passes_a_private_file_and_reports_a_locked_tray() {
    let fake = FakeVirsh::new(&format!(
        r#"case "$*" in *update-device*)
  while [ $# -gt 0 ]; do if [ "$1" = --file ]; then cp "$2" "$rec/device.xml"; stat -c %a "$2" > "$rec/mode"; fi; shift; done
  cat '{}' >&2; exit 1;; esac"#,
        fixture("err_tray_timed_out.txt")
    ))
    .with_domains(&["vm"]);
    let hv = VirshHypervisor::with_program(fake.program(), None).unwrap();
    let xml = "<disk type='file' device='cdrom'><target dev='sdb' bus='scsi'/><readonly/></disk>";
    let err = hv
        .update_device("vm", xml, ChangeScope::BOTH, true)
        .unwrap_err();
    assert_eq!(
        err,
        HvError::TrayLocked {
            domain: "vm".into(),
            drive: "sdb".into()
        }
    );
    let argv = fake.argv(2);
    assert_eq!(&argv[..3], ["update-device", "--domain", &uuid(0)]);
    assert_eq!(argv[3], "--file");
    assert_eq!(&argv[5..], ["--live", "--config", "--force"]);
    assert_eq!(
        fs::read_to_string(fake.path("rec/device.xml")).unwrap(),
        xml
    );
    assert_eq!(
        fs::read_to_string(fake.path("rec/mode")).unwrap().trim(),
        "600"
    );
    assert!(
        !Path::new(&argv[4]).exists(),
        "the temporary device file must be removed"
    );
}

#[test]
fn batch_falls_back_to_one_child_per_command_without_echo_err() {
    // An old virsh that knows no `echo --err`: the framed batch fails to parse as a
    // whole, and the adapter asks one command at a time instead.
    let fake = FakeVirsh::new(
        r#"case "$last" in
  *"echo --err"*) echo "error: command 'echo' doesn't support option --err" >&2; exit 1;;
  "dumpxml --domain '00000000-0000-4000-8000-000000000000'") echo "<domain><name>a</name></domain>"; exit 0;;
  "dumpxml --domain '00000000-0000-4000-8000-000000000001'") echo "error: failed to get domain 'x'" >&2; exit 1;;
esac"#,
    )
    .with_domains(&["a", "b c"]);
    let hv = VirshHypervisor::with_program(fake.program(), None).unwrap();
    let got = hv.domain_xmls(&["a".into(), "b c".into()], XmlScope::Current);
    assert_eq!(
        got[0].as_deref().unwrap(),
        "<domain><name>a</name></domain>\n"
    );
    assert_eq!(got[1], Err(HvError::NoSuchDomain("b c".into())));
    // uri, the listing, the framed batch, then one child per command.
    assert_eq!(fake.calls(), 5);
}
