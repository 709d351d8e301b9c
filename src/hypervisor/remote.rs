//! Remote connections, for both adapters: what the port adds to a URI so that ssh never
//! prompts, the deadline of an open, and the one-line errors of ssh's failures.
//!
//! libvirt's `ssh` transport runs the `ssh` program; unless told otherwise it lets that
//! program ask for a password or about an unknown host key on the user's terminal, which
//! hangs a scan in a script and interleaves with our own output. With `no_tty=1` libvirt
//! runs `ssh -T -o BatchMode=yes -e none`: no terminal, no question, a failure instead —
//! which [`classify`] turns into a line that says what to do. libvirt has no connect
//! timeout (a host that accepts and never answers holds `virConnectOpen` forever), so each
//! adapter bounds its open with [`DEFAULT_CONNECT_TIMEOUT`] or the user's setting.

use std::borrow::Cow;
use std::time::Duration;

use super::HvError;

/// How long an open may take unless the user says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a libvirt URI reaches its daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A local socket (`qemu:///system`, `+unix`), or a driver without a daemon (`test:`).
    Local,
    /// libvirt runs the `ssh` program.
    Ssh,
    /// libvirt's built-in ssh clients (`+libssh`, `+libssh2`): they ask through an auth
    /// callback, which neither adapter gives them, so they cannot prompt.
    LibSsh,
    /// `+tcp`, `+tls`, and a host without a transport (libvirt's default is TLS).
    Tcp,
    /// `+ext`: a program of the user's.
    External,
}

impl Transport {
    /// A network transport: one where a dead link can only be noticed by keepalive.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            Transport::Ssh | Transport::LibSsh | Transport::Tcp | Transport::External
        )
    }
}

/// The parts of a URI this module reads; `None` when it does not look like one.
struct Parts<'a> {
    scheme: &'a str,
    /// `user@host:port`, possibly empty.
    authority: &'a str,
}

fn parts(uri: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = uri.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(Parts {
        scheme,
        authority: &rest[..end],
    })
}

/// The transport of `uri`; [`Transport::Local`] for anything this module cannot read.
pub fn transport(uri: &str) -> Transport {
    let Some(p) = parts(uri) else {
        return Transport::Local;
    };
    match p
        .scheme
        .split_once('+')
        .map(|(_, t)| t.to_ascii_lowercase())
    {
        Some(t) => match t.as_str() {
            "ssh" => Transport::Ssh,
            "libssh" | "libssh2" => Transport::LibSsh,
            "tcp" | "tls" => Transport::Tcp,
            "ext" => Transport::External,
            _ => Transport::Local,
        },
        None if !p.authority.is_empty() => Transport::Tcp,
        None => Transport::Local,
    }
}

/// `user@host:port` of `uri`, split: (user, host, port). The host keeps IPv6 brackets.
pub fn host_of(uri: &str) -> Option<(Option<&str>, &str, Option<&str>)> {
    let authority = parts(uri)?.authority;
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if hostport.starts_with('[') {
        match hostport.split_once(']') {
            Some((h, rest)) => (
                &hostport[..=h.len()],
                rest.strip_prefix(':').filter(|p| !p.is_empty()),
            ),
            None => (hostport, None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p).filter(|p| !p.is_empty())),
            None => (hostport, None),
        }
    };
    (!host.is_empty()).then_some((user, host, port))
}

/// Whether the query names the parameter `name` (libvirt compares names without case and
/// splits on `&` and `;`).
fn has_param(query: &str, name: &str) -> bool {
    query
        .split(['&', ';'])
        .map(|kv| kv.split('=').next().unwrap_or_default())
        .any(|k| k.eq_ignore_ascii_case(name))
}

/// `uri` with `no_tty=1` added when its transport runs the `ssh` program and the user did
/// not set `no_tty` themselves; every other URI, and everything else in this one, is
/// unchanged byte for byte (escapes included).
pub fn without_prompts(uri: &str) -> Cow<'_, str> {
    if transport(uri) != Transport::Ssh {
        return Cow::Borrowed(uri);
    }
    let (body, fragment) = match uri.find('#') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let added = match body.split_once('?') {
        Some((_, q)) if has_param(q, "no_tty") => return Cow::Borrowed(uri),
        Some((_, "")) => format!("{body}no_tty=1{fragment}"),
        Some((_, q)) if q.ends_with('&') || q.ends_with(';') => {
            format!("{body}no_tty=1{fragment}")
        }
        Some(_) => format!("{body}&no_tty=1{fragment}"),
        None => format!("{body}?no_tty=1{fragment}"),
    };
    Cow::Owned(added)
}

/// `uri` as the user wrote it: the `no_tty=1` that [`without_prompts`] adds to an ssh
/// transport's URI (and that libvirt then reports back) taken out again, for every line
/// the user reads; every other URI is unchanged.
pub fn shown(uri: &str) -> Cow<'_, str> {
    if transport(uri) != Transport::Ssh {
        return Cow::Borrowed(uri);
    }
    let (body, fragment) = match uri.find('#') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let Some((path, query)) = body.split_once('?') else {
        return Cow::Borrowed(uri);
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.eq_ignore_ascii_case("no_tty=1"))
        .collect();
    if kept.len() == query.split('&').count() {
        return Cow::Borrowed(uri);
    }
    let query = kept.join("&");
    let sep = if query.is_empty() { "" } else { "?" };
    Cow::Owned(format!("{path}{sep}{query}{fragment}"))
}

/// What ssh's failure (as libvirt passes it on in its message) means, for an open of `uri`
/// (the URI as the user gave it); `None` when the message is not one of ssh's.
pub fn classify(uri: &str, message: &str) -> Option<HvError> {
    let t = transport(uri);
    if !matches!(t, Transport::Ssh | Transport::LibSsh) {
        return None;
    }
    let lower = message.to_ascii_lowercase();
    let (user, host, port) = host_of(uri).unwrap_or((None, "HOST", None));
    let host_key = lower.contains("host key verification failed")
        || (lower.contains("host key")
            && [
                "unknown",
                "not known",
                "changed",
                "mismatch",
                "not match",
                "not verified",
            ]
            .iter()
            .any(|w| lower.contains(w)));
    if host_key {
        let keyscan = match port {
            Some(p) => format!("ssh-keyscan -p {p} {}", host.trim_matches(['[', ']'])),
            None => format!("ssh-keyscan {}", host.trim_matches(['[', ']'])),
        };
        return Some(HvError::SshHostKey {
            uri: uri.to_string(),
            keyscan,
            detail: message.to_string(),
        });
    }
    let refused = (lower.contains("permission denied (")
        && [
            "publickey",
            "password",
            "keyboard-interactive",
            "gssapi",
            "hostbased",
        ]
        .iter()
        .any(|m| lower.contains(m)))
        || lower.contains("no more authentication methods")
        || lower.contains("too many authentication failures")
        || (t == Transport::LibSsh && lower.contains("authentication failed"));
    // ssh's own words when it never got to the host: the host is the problem, not libvirtd.
    let no_host = t == Transport::Ssh
        && (lower.contains("ssh: connect to host")
            || lower.contains("ssh: could not resolve hostname")
            || lower.contains("connection timed out during banner exchange")
            || lower.contains("kex_exchange_identification"));
    if no_host {
        return Some(HvError::SshUnreachable {
            uri: uri.to_string(),
            detail: message.to_string(),
        });
    }
    if refused {
        return Some(HvError::SshAuth {
            uri: uri.to_string(),
            login: match user {
                Some(u) => format!("{u}@{host}"),
                None => host.to_string(),
            },
            detail: message.to_string(),
        });
    }
    None
}

/// The error of an open that did not finish within `limit`.
pub fn timed_out(uri: &str, limit: Duration) -> HvError {
    HvError::ConnectTimeout {
        uri: uri.to_string(),
        seconds: limit.as_secs_f64().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_are_read_from_the_scheme() {
        for (uri, t) in [
            ("qemu:///system", Transport::Local),
            ("qemu+unix:///session?socket=/x", Transport::Local),
            ("test:///default", Transport::Local),
            ("qemu+ssh://root@h/system", Transport::Ssh),
            ("QEMU+SSH://h/system", Transport::Ssh),
            ("qemu+libssh://h/system", Transport::LibSsh),
            ("qemu+libssh2://h/system", Transport::LibSsh),
            ("qemu+tcp://127.0.0.1:1/system", Transport::Tcp),
            ("qemu+tls://h/system", Transport::Tcp),
            ("qemu://h/system", Transport::Tcp),
            ("qemu+ext:///system?command=/bin/x", Transport::External),
            ("not a uri", Transport::Local),
            ("", Transport::Local),
        ] {
            assert_eq!(transport(uri), t, "{uri}");
        }
        assert!(Transport::Tcp.is_network() && Transport::Ssh.is_network());
        assert!(!Transport::Local.is_network());
    }

    #[test]
    fn the_no_tty_added_is_not_shown() {
        for given in [
            "qemu+ssh://root@h/system",
            "qemu+ssh://h:2222/system?keyfile=/k&socket=/s",
            "qemu+ssh://us%40er@h/system?keyfile=/a%20b%26c#frag",
            "qemu+ssh://h/system?keyfile=/no_tty",
        ] {
            assert_eq!(shown(&without_prompts(given)), given);
        }
        // libvirt's own form of a URI it reports back, and URIs left alone.
        assert_eq!(
            shown("qemu+ssh://root@127.0.0.1:2222/session?no_tty=1&keyfile=/k"),
            "qemu+ssh://root@127.0.0.1:2222/session?keyfile=/k"
        );
        for other in [
            "qemu+ssh://h/system?no_tty=0",
            "qemu+libssh://h/system?no_tty=1",
            "qemu:///system",
        ] {
            assert!(matches!(shown(other), Cow::Borrowed(u) if u == other));
        }
    }

    #[test]
    fn no_tty_is_added_for_the_ssh_program_only() {
        assert_eq!(
            without_prompts("qemu+ssh://root@h/system"),
            "qemu+ssh://root@h/system?no_tty=1"
        );
        assert_eq!(
            without_prompts("qemu+ssh://h:2222/system?keyfile=/k&socket=/s"),
            "qemu+ssh://h:2222/system?keyfile=/k&socket=/s&no_tty=1"
        );
        assert_eq!(
            without_prompts("qemu+ssh://h/system?"),
            "qemu+ssh://h/system?no_tty=1"
        );
        assert_eq!(
            without_prompts("qemu+ssh://h/system?keyfile=/k&"),
            "qemu+ssh://h/system?keyfile=/k&no_tty=1"
        );
        // Escapes stay as they were; a fragment stays last.
        assert_eq!(
            without_prompts("qemu+ssh://us%40er@h/system?keyfile=/a%20b%26c#frag"),
            "qemu+ssh://us%40er@h/system?keyfile=/a%20b%26c&no_tty=1#frag"
        );
        // The user's own choice is kept, whatever its value or case.
        for given in [
            "qemu+ssh://h/system?no_tty=0",
            "qemu+ssh://h/system?keyfile=/k&NO_TTY=1",
            "qemu+ssh://h/system?a=1;no_tty=0",
        ] {
            assert!(matches!(without_prompts(given), Cow::Borrowed(u) if u == given));
        }
        // A value that merely contains the name is not the parameter.
        assert_eq!(
            without_prompts("qemu+ssh://h/system?keyfile=/no_tty"),
            "qemu+ssh://h/system?keyfile=/no_tty&no_tty=1"
        );
        for other in [
            "qemu:///system",
            "qemu+unix:///session?socket=/x",
            "qemu+libssh2://h/system",
            "qemu+libssh://h/system",
            "qemu+tcp://h/system",
            "qemu+ext:///system?command=ssh",
            "nonsense",
        ] {
            assert!(matches!(without_prompts(other), Cow::Borrowed(u) if u == other));
        }
    }

    #[test]
    fn hosts_are_read_from_the_authority() {
        assert_eq!(
            host_of("qemu+ssh://root@h.example:2222/system"),
            Some((Some("root"), "h.example", Some("2222")))
        );
        assert_eq!(host_of("qemu+ssh://h/system"), Some((None, "h", None)));
        assert_eq!(
            host_of("qemu+ssh://u@[::1]:22/system?x=1"),
            Some((Some("u"), "[::1]", Some("22")))
        );
        assert_eq!(host_of("qemu:///system"), None);
        assert_eq!(host_of("garbage"), None);
    }

    #[test]
    fn ssh_failures_say_what_to_do() {
        let u = "qemu+ssh://root@h.example:2222/system";
        // As libvirt 9.0 passes ssh's stderr on (virsh and the native adapter alike).
        let e = classify(
            u,
            "Cannot recv data: Host key verification failed.: Connection reset by peer",
        )
        .unwrap();
        assert!(matches!(e, HvError::SshHostKey { .. }));
        let line = e.to_string();
        assert!(line.contains("known_hosts"), "{line}");
        assert!(line.contains("ssh-keyscan -p 2222 h.example"), "{line}");
        assert!(line.contains(u), "{line}");

        let e = classify(
            u,
            "Cannot recv data: root@h.example: Permission denied (publickey,password).: Connection reset by peer",
        )
        .unwrap();
        assert!(matches!(e, HvError::SshAuth { .. }));
        let line = e.to_string();
        assert!(line.contains("keyfile="), "{line}");
        assert!(line.contains("root@h.example"), "{line}");

        // libssh2's wording.
        assert!(matches!(
            classify(
                "qemu+libssh2://h/system",
                "SSH transport error: no suitable method to retrieve authentication credentials: authentication failed"
            ),
            Some(HvError::SshAuth { .. })
        ));
        assert!(matches!(
            classify(
                "qemu+libssh2://h/system",
                "SSH transport error: Cannot check host key: host key is unknown"
            ),
            Some(HvError::SshHostKey { .. })
        ));
        // ssh never reached the host: the line is about the host, not libvirtd.
        for text in [
            "Cannot recv data: ssh: connect to host h.example port 2222: Connection refused: Connection reset by peer",
            "Cannot recv data: ssh: Could not resolve hostname h.example: Name or service not known: Connection reset by peer",
            "Cannot recv data: ssh: connect to host h.example port 2222: No route to host: Connection reset by peer",
        ] {
            let e = classify(u, text).unwrap();
            assert!(matches!(e, HvError::SshUnreachable { .. }), "{text}");
            assert!(e.to_string().contains("is the host up"), "{e}");
        }
        // Not ssh's: left to the adapter's own classification.
        assert_eq!(
            classify(u, "Cannot recv data: End of file while reading data: nc: unix connect failed: No such file or directory: Input/output error"),
            None
        );
        assert_eq!(
            classify(
                "qemu:///system",
                "Failed to connect socket to '/run/libvirt/libvirt-sock': Permission denied"
            ),
            None
        );
        assert_eq!(
            classify("qemu+tcp://h/system", "Host key verification failed"),
            None
        );
    }

    #[test]
    fn a_timeout_names_the_uri_and_the_limit() {
        let line =
            timed_out("qemu+tcp://127.0.0.1:9/system", Duration::from_millis(2500)).to_string();
        assert!(line.contains("qemu+tcp://127.0.0.1:9/system"), "{line}");
        assert!(line.contains("2.5 s"), "{line}");
        assert!(line.contains("--connect-timeout"), "{line}");
    }
}
