//! virsh's error text: one line for the user, classified into the port's errors so
//! callers decide on meaning. Fixtures under `tests/fixtures/virsh/` pin what libvirt 9.0
//! prints.

use crate::hypervisor::{HvError, MAX_DETAIL};
use crate::units::clip;

/// virsh's error text as one line: `error: ` prefixes stripped, the generic
/// "failed to connect to the hypervisor" dropped when a specific reason follows, lines
/// without the prefix (libxml2 warnings) kept only when no `error:` line exists.
pub fn one_line_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix("error: ")
                .or_else(|| l.strip_prefix("error:"))
        })
        .map(str::trim)
        // A bare `error:` says nothing; it must not hide the lines that do.
        .filter(|l| !l.is_empty())
        .collect();
    let mut chosen: Vec<&str> = if errors.is_empty() { lines } else { errors };
    let generic = |l: &&str| l.eq_ignore_ascii_case("failed to connect to the hypervisor");
    // Only when a specific reason is left: dropping every line would say nothing.
    if chosen.iter().any(|l| !generic(l)) {
        chosen.retain(|l| !generic(l));
    }
    // A virsh that retries says the same thing once per command: say it once.
    let mut seen = std::collections::HashSet::new();
    chosen.retain(|l| seen.insert(*l));
    clip(&chosen.join(": "), MAX_DETAIL)
}

/// Whether virsh's stderr says it could not connect at all.
fn is_connect_failure(lower: &str) -> bool {
    [
        "failed to connect to the hypervisor",
        "failed to connect socket",
        "no connection driver available",
        "cannot recv data",
        "unable to connect to server",
        "unable to get system bus connection",
        "connection refused",
        "end of file while reading data",
        "authentication failed",
        "connection closed due to keepalive",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// Classify a failure to connect. `None` when the text is not about the connection.
pub fn classify_connect_error(uri: &str, stderr: &str) -> Option<HvError> {
    let lower = stderr.to_lowercase();
    if !is_connect_failure(&lower) {
        return None;
    }
    let detail = one_line_error(stderr);
    // ssh's refusals first: its "Permission denied (publickey)" is not the socket's.
    if let Some(e) = crate::hypervisor::remote::classify(uri, &detail) {
        return Some(e);
    }
    let uri = uri.to_string();
    Some(
        if lower.contains("permission denied")
            || lower.contains("authentication failed")
            || lower.contains("access denied")
            || lower.contains("not authorized")
        {
            HvError::PermissionDenied { uri, detail }
        } else if lower.contains("no connection driver available")
            || lower.contains("invalid uri")
            || lower.contains("unable to parse uri")
            || lower.contains("does not include a driver name")
            || lower.contains("unsupported")
            || lower.contains("xml error")
            || lower.contains("unexpected qemu uri path")
            || lower.contains("transport in uri")
        {
            HvError::BadUri { uri, detail }
        } else {
            HvError::Unreachable { uri, detail }
        },
    )
}

/// Classify the failure of a per-domain command (dumpxml, update-device, ...).
pub fn classify_domain_error(
    operation: &'static str,
    uri: &str,
    domain: &str,
    stderr: &str,
) -> HvError {
    if let Some(e) = classify_connect_error(uri, stderr) {
        return e;
    }
    let lower = stderr.to_lowercase();
    if lower.contains("failed to get domain")
        || lower.contains("domain not found")
        || lower.contains("no domain with matching")
    {
        HvError::NoSuchDomain(domain.to_string())
    } else if lower.contains("domain is not running") {
        HvError::DomainNotRunning(domain.to_string())
    } else {
        HvError::Failed {
            operation,
            detail: one_line_error(stderr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::virsh::fixture;

    #[test]
    fn errors_become_one_line() {
        assert_eq!(
            one_line_error(&fixture("err_socket_missing.txt")),
            "Failed to connect socket to '/nonexistent/sock': No such file or directory"
        );
        assert_eq!(
            one_line_error("error: failed to get domain 'x'\n"),
            "failed to get domain 'x'"
        );
        assert_eq!(one_line_error("  plain text \n"), "plain text");
    }

    #[test]
    fn a_batch_cut_short_is_one_line_without_framing_or_repeats() {
        let stderr =
            super::super::framing::without_markers(&fixture("err_lost_mid_batch.txt"), "5f3a");
        let e = classify_connect_error("qemu:///session", &stderr).unwrap();
        assert!(matches!(e, HvError::Unreachable { .. }));
        assert_eq!(
            e.to_string(),
            "cannot reach libvirt at qemu:///session: Disconnected from \
             qemu+unix:///session?socket=/run/user/1000/libvirt/libvirt-sock due to end of \
             file: End of file while reading data: Input/output error: Failed to reconnect \
             to the hypervisor: Cannot recv data: \
             Connection reset by peer: internal error: client socket is closed (is libvirtd \
             running?)"
        );
    }

    #[test]
    fn connection_errors_are_classified() {
        let u = "qemu:///system";
        assert!(matches!(
            classify_connect_error(u, &fixture("err_socket_missing.txt")),
            Some(HvError::Unreachable { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_connection_refused.txt")),
            Some(HvError::Unreachable { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_permission_denied.txt")),
            Some(HvError::PermissionDenied { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_no_driver.txt")),
            Some(HvError::BadUri { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_no_driver_name.txt")),
            Some(HvError::BadUri { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_test_xml_missing.txt")),
            Some(HvError::BadUri { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_ssh_unresolved.txt")),
            Some(HvError::Unreachable { .. })
        ));
        assert!(matches!(
            classify_connect_error(u, &fixture("err_no_system_bus.txt")),
            Some(HvError::Unreachable { .. })
        ));
        assert_eq!(
            classify_connect_error(u, "error: failed to get domain 'x'\n"),
            None
        );
    }

    #[test]
    fn ssh_connection_errors_say_what_to_do() {
        // virsh 9.0's stderr for an ssh transport with no_tty=1.
        let u = "qemu+ssh://diq@127.0.0.1:2222/session?no_tty=1";
        let e = classify_connect_error(
            u,
            "error: failed to connect to the hypervisor\nerror: Cannot recv data: Host key verification failed.: Connection reset by peer\n",
        )
        .unwrap();
        assert!(matches!(e, HvError::SshHostKey { .. }));
        assert!(e.to_string().contains("ssh-keyscan -p 2222 127.0.0.1"));
        let e = classify_connect_error(
            u,
            "error: failed to connect to the hypervisor\nerror: Cannot recv data: diq@127.0.0.1: Permission denied (publickey,password).: Connection reset by peer\n",
        )
        .unwrap();
        assert!(matches!(e, HvError::SshAuth { .. }));
        assert!(e.to_string().contains("keyfile="));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn domain_errors_are_classified() {
        let u = "test:///default";
        assert_eq!(
            classify_domain_error("dumpxml", u, "nope", "error: failed to get domain 'nope'\n"),
            HvError::NoSuchDomain("nope".into())
        );
        assert_eq!(
            classify_domain_error(
                "update-device",
                u,
                "vm",
                "error: Failed to update device from /tmp/x\nerror: Requested operation is not valid: domain is not running\n"
            ),
            HvError::DomainNotRunning("vm".into())
        );
        assert_eq!(
            classify_domain_error("dumpxml", u, "vm", "error: something odd\n"),
            HvError::Failed {
                operation: "dumpxml",
                detail: "something odd".into()
            }
        );
    }

    #[test]
    fn tray_lock_texts_as_virsh_prints_them() {
        use crate::hypervisor::tray_locked;
        let drive = "<disk type='file' device='cdrom'><driver name='qemu'/><target dev='sdb' bus='sata'/><readonly/></disk>";
        let locked = |text: &str, xml: &str| match tray_locked("vm", xml, text) {
            Some(HvError::TrayLocked { drive, .. }) => Some(drive),
            _ => None,
        };
        assert_eq!(
            locked(&fixture("err_tray_timed_out.txt"), "<disk/>").as_deref(),
            Some("sda")
        );
        assert_eq!(
            locked(&fixture("err_tray_timed_out.txt"), drive).as_deref(),
            Some("sdb")
        );
        assert_eq!(
            locked(&fixture("err_tray_qemu_locked.txt"), "<disk/>").as_deref(),
            Some("the CD-ROM drive")
        );
        assert_eq!(locked("error: some other failure", drive), None);
    }
}
