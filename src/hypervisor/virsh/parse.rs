//! Pure functions that turn `virsh` text into the port's types, build the command text
//! virsh's own shell grammar reads, and classify virsh's error text.
//!
//! Nothing here starts a process, so every failure mode can be pinned by a fixture file
//! under `tests/fixtures/virsh/` and tested without libvirt.

use std::collections::BTreeMap;

use unicode_width::UnicodeWidthChar;

use crate::hypervisor::{DomainInfo, DomainState, HvError};

/// Quote one token for virsh's command grammar (the one it applies to the commands of
/// `virsh "cmd1; cmd2"` and to lines read on stdin).
///
/// Single quotes make everything literal up to the next single quote (backslash
/// included), exactly as in a POSIX shell, so the only character needing care is the
/// single quote itself: close, add it escaped, reopen. The result is always one token,
/// also for the empty string. A raw newline survives inside quotes when the commands are
/// one argument, but ends the line when they are read on stdin: callers that use stdin
/// must refuse tokens with newlines (see [`fits_one_stdin_line`]).
pub fn quote_for_virsh_shell(token: &str) -> String {
    let mut out = String::with_capacity(token.len() + 2);
    out.push('\'');
    for c in token.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether a token can travel on one line of virsh's stdin.
pub fn fits_one_stdin_line(token: &str) -> bool {
    !token.contains('\n') && !token.contains('\r')
}

/// Parse a decimal like `6.1`, `6,1` (translated) or `1795627652` seconds into
/// nanoseconds without going through a float.
fn parse_seconds_to_ns(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches('s').trim();
    let (int_part, frac_part) = match t.find(['.', ',']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = int_part.parse().ok()?;
    let mut frac_ns: u64 = 0;
    for (i, b) in frac_part.bytes().take(9).enumerate() {
        frac_ns += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// `8388608 KiB` (or the old `kB`) → 8388608.
fn parse_kib(text: &str) -> Option<u64> {
    let t = text.trim();
    let number = t.split_whitespace().next()?;
    let unit = t[number.len()..].trim();
    let value: u64 = number.parse().ok()?;
    match unit {
        "" | "KiB" | "kB" | "KB" | "k" => Some(value),
        "MiB" => value.checked_mul(1024),
        "GiB" => value.checked_mul(1024 * 1024),
        _ => None,
    }
}

/// The state words of `virsh dominfo` / `virsh domstate`, English and German.
fn parse_state_word(text: &str) -> Option<DomainState> {
    let t = text.trim().to_lowercase();
    Some(match t.as_str() {
        "running" | "laufend" => DomainState::Running,
        "idle" | "blocked" => DomainState::Blocked,
        "paused" | "pausiert" => DomainState::Paused,
        "in shutdown" | "beim herunterfahren" => DomainState::ShuttingDown,
        "shut off" | "ausgeschaltet" => DomainState::ShutOff,
        "crashed" | "abgestürzt" => DomainState::Crashed,
        "pmsuspended" => DomainState::PmSuspended,
        "no state" | "kein status" => DomainState::NoState,
        _ => return None,
    })
}

fn parse_yes_no(text: &str) -> Option<bool> {
    match text.trim().to_lowercase().as_str() {
        "yes" | "ja" => Some(true),
        "no" | "nein" => Some(false),
        _ => None,
    }
}

/// Parse `virsh dominfo` text. The child always runs with `LC_ALL=C`, but the labels of
/// the German translation are understood too, so text captured from an operator's shell
/// (the seed's original failure) parses as well.
///
/// Missing `CPU time` (libvirt omits it when it is zero, e.g. shut off) means 0. Missing
/// `Used memory` means the domain's configured allocation, which libvirt reports as the
/// maximum for a domain that is not running; `Max memory: no limit` falls back the other
/// way round. Name, UUID and State are required.
pub fn parse_dominfo(text: &str) -> Result<DomainInfo, String> {
    let mut name = None;
    let mut uuid = None;
    let mut state = None;
    let mut persistent = None;
    let mut vcpus = None;
    let mut max_kib = None;
    let mut used_kib = None;
    let mut cpu_ns = None;
    for line in text.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match label.trim() {
            "Name" => name = Some(value.to_string()),
            "UUID" => uuid = Some(value.to_string()),
            "State" | "Status" => {
                state = Some(
                    parse_state_word(value).ok_or_else(|| format!("unknown state {value:?}"))?,
                )
            }
            "Persistent" | "Bleibend" => persistent = parse_yes_no(value),
            "CPU(s)" => vcpus = value.parse::<u32>().ok(),
            "CPU time" | "CPU-Zeit" => {
                cpu_ns = Some(
                    parse_seconds_to_ns(value)
                        .ok_or_else(|| format!("cannot read CPU time {value:?}"))?,
                )
            }
            "Max memory" | "Max Speicher" | "Maximaler Speicher" => max_kib = parse_kib(value),
            "Used memory" | "Verwendeter Speicher" => {
                used_kib = Some(
                    parse_kib(value).ok_or_else(|| format!("cannot read used memory {value:?}"))?,
                )
            }
            _ => {}
        }
    }
    let name = name.ok_or("no Name line")?;
    let uuid = uuid.ok_or("no UUID line")?;
    let state = state.ok_or("no State line")?;
    let (memory_max_kib, memory_used_kib) = match (max_kib, used_kib) {
        (Some(m), Some(u)) => (m, u),
        (Some(m), None) => (m, m),
        (None, Some(u)) => (u, u),
        (None, None) => return Err("neither Max memory nor Used memory".to_string()),
    };
    Ok(DomainInfo {
        name,
        uuid,
        state,
        persistent: persistent.unwrap_or(true),
        vcpus: vcpus.unwrap_or(0),
        memory_max_kib,
        memory_used_kib,
        cpu_time_ns: cpu_ns.unwrap_or(0),
    })
}

/// One `Domain: 'name'` record of `virsh domstats --raw`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomStats {
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl DomStats {
    fn u64_field(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(|v| v.parse().ok())
    }

    pub fn state(&self) -> Option<DomainState> {
        self.u64_field("state.state")
            .and_then(|c| u32::try_from(c).ok())
            .map(DomainState::from_libvirt)
    }

    /// Our fields, when the record has all we need. Drivers differ: the QEMU driver
    /// reports balloon and vCPU counts for every domain and `cpu.time` for running ones;
    /// the test driver reports the state only. `None` sends the caller to `dominfo`.
    pub fn to_info(&self, uuid: &str, persistent: bool) -> Option<DomainInfo> {
        let state = self.state()?;
        let max = self.u64_field("balloon.maximum")?;
        let used = self.u64_field("balloon.current").unwrap_or(max);
        let vcpus = self
            .u64_field("vcpu.current")
            .and_then(|v| u32::try_from(v).ok())?;
        // Only a running domain has consumed CPU time we can report. libvirt 9.0 was
        // measured to print a changing `cpu.time` for a shut-off QEMU domain (apparently
        // read from its stale pid), where dominfo and virDomainGetInfo say 0.
        let cpu = match (state.is_active(), self.u64_field("cpu.time")) {
            (true, Some(ns)) => ns,
            (true, None) => return None,
            (false, _) => 0,
        };
        Some(DomainInfo {
            name: self.name.clone(),
            uuid: uuid.to_string(),
            state,
            persistent,
            vcpus,
            memory_max_kib: max,
            memory_used_kib: used,
            cpu_time_ns: cpu,
        })
    }
}

/// Parse `virsh domstats --raw`. Names are printed between single quotes without any
/// escaping, so the name is everything between the first and the last quote.
pub fn parse_domstats(text: &str) -> Result<Vec<DomStats>, String> {
    let mut out: Vec<DomStats> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Domain: ") {
            let name = rest
                .trim_end()
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .ok_or_else(|| format!("cannot read domain name in {line:?}"))?;
            out.push(DomStats {
                name: name.to_string(),
                fields: BTreeMap::new(),
            });
        } else if let Some((key, value)) = line.trim().split_once('=') {
            let record = out
                .last_mut()
                .ok_or_else(|| format!("stat {key:?} before any Domain line"))?;
            record
                .fields
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    Ok(out)
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Parse `virsh list --all --uuid --name`: `UUID NAME` per line.
pub fn parse_list_uuid_name(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let line = line.trim_start();
        let (uuid, name) = line
            .split_once(' ')
            .ok_or_else(|| format!("expected 'UUID NAME', got {line:?}"))?;
        if !looks_like_uuid(uuid) {
            return Err(format!("expected a UUID, got {uuid:?}"));
        }
        out.push((uuid.to_string(), name.to_string()));
    }
    Ok(out)
}

/// Parse a one-item-per-line listing (`list --uuid`, `pool-list --name`); virsh pads
/// some of them with trailing blanks.
pub fn parse_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Display column where each header word starts (virsh aligns its tables by display
/// width, not bytes, so non-ASCII names shift byte offsets but not columns).
fn column_starts(header: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut col = 0;
    let mut prev_blank = true;
    for c in header.chars() {
        let blank = c == ' ';
        if !blank && prev_blank {
            starts.push(col);
        }
        prev_blank = blank;
        col += c.width().unwrap_or(0);
    }
    starts
}

/// Split a table row at the given display columns.
fn split_at_columns(row: &str, starts: &[usize]) -> Vec<String> {
    let mut cells = vec![String::new(); starts.len()];
    let mut col = 0;
    for c in row.chars() {
        let idx = starts.iter().rposition(|&s| s <= col).unwrap_or(0);
        cells[idx].push(c);
        col += c.width().unwrap_or(0);
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Parse the `Name Path` table of `virsh vol-list --pool P`. Cells are cut at the header's
/// columns so names and paths with blanks survive.
pub fn parse_vol_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let header = lines.next().ok_or("empty volume listing")?;
    let starts = column_starts(header);
    if starts.len() < 2 {
        return Err(format!("unexpected vol-list header {header:?}"));
    }
    let mut out = Vec::new();
    for line in lines {
        if line.trim().is_empty() || line.trim_start().starts_with("---") {
            continue;
        }
        let cells = split_at_columns(line, &starts);
        out.push((cells[0].clone(), cells[1].clone()));
    }
    Ok(out)
}

/// What `virsh vol-dumpxml` tells us: name, path and capacity in bytes.
pub fn parse_volume_xml(xml: &str) -> Result<(String, Option<String>, Option<u64>), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("volume XML: {e}"))?;
    let root = doc.root_element();
    let child_text = |parent: roxmltree::Node, name: &str| {
        parent
            .children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
    };
    let name = child_text(root, "name").ok_or("volume XML without <name>")?;
    let path = root
        .children()
        .find(|n| n.has_tag_name("target"))
        .and_then(|t| child_text(t, "path"));
    let capacity = root
        .children()
        .find(|n| n.has_tag_name("capacity"))
        .and_then(|n| {
            let value: u64 = n.text()?.trim().parse().ok()?;
            let factor: u64 = match n.attribute("unit").unwrap_or("bytes") {
                "bytes" | "b" | "B" => 1,
                "KiB" | "K" | "k" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                "TiB" | "T" => 1 << 40,
                "KB" => 1000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            value.checked_mul(factor)
        });
    Ok((name, path, capacity))
}

/// The `return` member of the reply `virsh qemu-agent-command` printed. A reply with an
/// `error` member (libvirt normally turns those into errors itself) gives its `desc`.
pub fn parse_agent_reply(text: &str) -> Result<serde_json::Value, String> {
    let trimmed = text.trim();
    let mut reply: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
        let shown: String = trimmed.chars().take(120).collect();
        format!("the agent reply is not JSON ({e}): {shown:?}")
    })?;
    if let Some(ret) = reply.get_mut("return") {
        return Ok(ret.take());
    }
    if let Some(err) = reply.get("error") {
        let desc = err
            .get("desc")
            .and_then(|d| d.as_str())
            .or_else(|| err.get("class").and_then(|c| c.as_str()))
            .unwrap_or("unknown error");
        return Err(desc.to_string());
    }
    Err("the agent reply has no `return` member".to_string())
}

/// Text between each pair of consecutive markers. `markers` are the exact strings the
/// `echo` commands printed; `None` when one is missing (virsh stopped early, or the
/// output is not what we asked for).
pub fn split_by_markers<'a>(text: &'a str, markers: &[String]) -> Option<Vec<&'a str>> {
    let mut positions = Vec::with_capacity(markers.len());
    let mut from = 0;
    for m in markers {
        let at = from + text[from..].find(m.as_str())?;
        positions.push((at, at + m.len()));
        from = at + m.len();
    }
    Some(
        positions
            .windows(2)
            .map(|w| text[w[0].1..w[1].0].trim_matches(['\n', '\r']))
            .collect(),
    )
}

/// The output of the one command between two markers when virsh read its commands on
/// stdin. In that mode readline echoes every prompt and input line to stdout
/// (`virsh # <command>`), long input lines get carriage returns, and the command's own
/// output loses its final newline so the next prompt follows on the same line. So: take
/// the text between the two marker outputs, drop everything from the last prompt on
/// (the prompt of the closing `echo`; a prompt string inside the reply can only come
/// before it), and keep the last line of what is left — the reply is one line of JSON.
pub fn stdin_command_output<'a>(stdout: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = stdout.find(begin)? + begin.len();
    let stop = start + stdout[start..].find(end)?;
    let segment = &stdout[start..stop];
    let cut = ["virsh # ", "virsh > "]
        .iter()
        .filter_map(|p| segment.rfind(p))
        .max()
        .unwrap_or(segment.len());
    let body = segment[..cut].trim_end_matches(['\n', '\r']);
    let last = body.rsplit('\n').next().unwrap_or("");
    if last.starts_with("virsh # ") || last.starts_with("virsh > ") {
        // Only the echoed command line is left: the command printed nothing.
        return Some("");
    }
    Some(last.trim_end_matches('\r'))
}

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
        .collect();
    let mut chosen: Vec<&str> = if errors.is_empty() { lines } else { errors };
    if chosen.len() > 1 {
        chosen.retain(|l| !l.eq_ignore_ascii_case("failed to connect to the hypervisor"));
    }
    chosen.join(": ")
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

/// The drive named in a "tray is locked" failure, if this is one. libvirt says
/// "timed out waiting to open tray of 'sda'"; QEMU says "Device '...' is locked and force
/// was not specified, wait for tray to open and try again". `Some("")` when the text is a
/// tray lock but names no drive we can use.
pub fn tray_locked_drive(stderr: &str) -> Option<String> {
    let lower = stderr.to_lowercase();
    let locked = lower.contains("waiting to open tray")
        || (lower.contains("is locked") && lower.contains("tray"))
        || lower.contains("tray is locked");
    if !locked {
        return None;
    }
    let drive = stderr
        .find("tray of '")
        .map(|i| &stderr[i + "tray of '".len()..])
        .and_then(|rest| rest.split_once('\'').map(|(d, _)| d.to_string()))
        .unwrap_or_default();
    Some(drive)
}

/// The `<target dev='…'/>` of a `<disk>` device XML (the drive a media change is about).
pub fn device_target_dev(device_xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(device_xml).ok()?;
    doc.root_element()
        .children()
        .find(|n| n.has_tag_name("target"))
        .and_then(|n| n.attribute("dev"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/virsh/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn quoting_is_one_literal_token() {
        assert_eq!(quote_for_virsh_shell("plain"), "'plain'");
        assert_eq!(quote_for_virsh_shell(""), "''");
        assert_eq!(quote_for_virsh_shell("it's"), r"'it'\''s'");
        assert_eq!(quote_for_virsh_shell("a b;c"), "'a b;c'");
        assert_eq!(quote_for_virsh_shell(r#"x\"y"#), r#"'x\"y'"#);
        assert_eq!(quote_for_virsh_shell("grüße #1"), "'grüße #1'");
        assert!(fits_one_stdin_line("{\"a\":\"b\\nc\"}"));
        assert!(!fits_one_stdin_line("a\nb"));
    }

    /// Model of virsh's tokenizer (vshCommandStringGetArg) for the round-trip test.
    fn virsh_tokens(line: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek().is_none() {
                return tokens;
            }
            let (mut sq, mut dq) = (false, false);
            let mut tok = String::new();
            while let Some(&c) = chars.peek() {
                if !sq && !dq && (c == ' ' || c == '\t' || c == ';' || c == '\n') {
                    break;
                }
                chars.next();
                if !dq && c == '\'' {
                    sq = !sq;
                } else if !sq && c == '\\' {
                    tok.push(chars.next().expect("dangling backslash"));
                } else if !sq && c == '"' {
                    dq = !dq;
                } else {
                    tok.push(c);
                }
            }
            tokens.push(tok);
        }
    }

    #[test]
    fn quoting_round_trips_through_virsh_grammar() {
        for s in [
            "vm",
            "",
            "with space",
            "it's",
            "''",
            "\"dq\"",
            "back\\slash",
            "semi;colon",
            "#hash",
            "--looks-like-option",
            "ünïcødé 名前",
            "{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"a'b\"}}",
        ] {
            let line = format!("cmd {}", quote_for_virsh_shell(s));
            assert_eq!(virsh_tokens(&line), vec!["cmd".to_string(), s.to_string()]);
        }
    }

    proptest::proptest! {
        #[test]
        fn quoting_round_trips_any_text(s in "[^\n\r]{0,40}") {
            let line = format!("cmd {} tail", quote_for_virsh_shell(&s));
            proptest::prop_assert_eq!(
                virsh_tokens(&line),
                vec!["cmd".to_string(), s.clone(), "tail".to_string()]
            );
        }
    }

    #[test]
    fn dominfo_running() {
        let info = parse_dominfo(&fixture("dominfo_running.txt")).unwrap();
        assert_eq!(info.name, "test");
        assert_eq!(info.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(info.state, DomainState::Running);
        assert!(info.persistent);
        assert_eq!(info.vcpus, 2);
        assert_eq!(info.memory_max_kib, 8_388_608);
        assert_eq!(info.memory_used_kib, 2_097_152);
        assert_eq!(info.cpu_time_ns, 1_795_627_652_400_000_000);
    }

    #[test]
    fn dominfo_german_decimal_comma() {
        let info = parse_dominfo(&fixture("dominfo_de.txt")).unwrap();
        assert_eq!(info.name, "web01");
        assert_eq!(info.state, DomainState::Running);
        assert_eq!(info.cpu_time_ns, 6_100_000_000);
        assert_eq!(info.memory_max_kib, 262_144);
        assert_eq!(info.memory_used_kib, 131_072);
        assert!(!info.persistent);
        assert_eq!(info.vcpus, 1);
    }

    #[test]
    fn dominfo_german_long_labels() {
        let info = parse_dominfo(&fixture("dominfo_de_long_labels.txt")).unwrap();
        assert_eq!(info.state, DomainState::ShutOff);
        assert_eq!(info.memory_max_kib, 262_144);
        assert_eq!(info.cpu_time_ns, 0);
    }

    #[test]
    fn dominfo_shut_off_without_cpu_time() {
        let info = parse_dominfo(&fixture("dominfo_shutoff_no_cputime.txt")).unwrap();
        assert_eq!(info.state, DomainState::ShutOff);
        assert_eq!(info.cpu_time_ns, 0);
        assert_eq!(info.memory_used_kib, 1_048_576);
    }

    #[test]
    fn dominfo_without_used_memory_uses_max() {
        let info = parse_dominfo(&fixture("dominfo_no_used_memory.txt")).unwrap();
        assert_eq!(info.memory_max_kib, 524_288);
        assert_eq!(info.memory_used_kib, 524_288);
        assert_eq!(info.state, DomainState::Paused);
    }

    #[test]
    fn dominfo_no_limit_and_old_kb_unit() {
        let info = parse_dominfo(&fixture("dominfo_no_limit_kb.txt")).unwrap();
        assert_eq!(info.memory_max_kib, 131_072);
        assert_eq!(info.memory_used_kib, 131_072);
        assert_eq!(info.state, DomainState::Blocked);
    }

    #[test]
    fn dominfo_garbage_is_an_error() {
        assert!(parse_dominfo(&fixture("dominfo_garbage.txt")).is_err());
        assert!(parse_dominfo("").is_err());
        assert!(parse_dominfo("Name: x\nUUID: y\nState: dancing\n").is_err());
    }

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(parse_seconds_to_ns("6,1s"), Some(6_100_000_000));
        assert_eq!(parse_seconds_to_ns("0.0s"), Some(0));
        assert_eq!(parse_seconds_to_ns("12s"), Some(12_000_000_000));
        assert_eq!(parse_seconds_to_ns("1.123456789123s"), Some(1_123_456_789));
        assert_eq!(parse_seconds_to_ns("abc"), None);
        assert_eq!(parse_seconds_to_ns("-1s"), None);
    }

    #[test]
    fn domstats_qemu_records_are_complete() {
        let stats = parse_domstats(&fixture("domstats_qemu.txt")).unwrap();
        assert_eq!(stats.len(), 3);
        let run = stats[0].to_info("u", true).unwrap();
        assert_eq!(run.name, "diq-ubuntu");
        assert_eq!(run.state, DomainState::Running);
        assert_eq!(run.memory_max_kib, 262_144);
        assert_eq!(run.memory_used_kib, 262_144);
        assert_eq!(run.vcpus, 1);
        assert_eq!(run.cpu_time_ns, 9_876_543_210);
        let off = stats[1].to_info("u", true).unwrap();
        assert_eq!(off.name, "it's off");
        assert_eq!(off.state, DomainState::ShutOff);
        assert_eq!(off.cpu_time_ns, 0);
        let paused = stats[2].to_info("u", false).unwrap();
        assert_eq!(paused.state, DomainState::Paused);
        assert!(!paused.persistent);
    }

    #[test]
    fn domstats_test_driver_needs_dominfo() {
        let stats = parse_domstats(&fixture("domstats_test_driver.txt")).unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].state(), Some(DomainState::Running));
        assert_eq!(stats[0].to_info("u", true), None);
    }

    #[test]
    fn domstats_running_without_cpu_time_needs_dominfo() {
        let stats = parse_domstats(&fixture("domstats_running_no_cpu.txt")).unwrap();
        assert_eq!(stats[0].to_info("u", true), None);
    }

    #[test]
    fn domstats_garbage() {
        assert!(parse_domstats(&fixture("domstats_garbage.txt")).is_err());
        assert_eq!(parse_domstats("").unwrap(), vec![]);
    }

    #[test]
    fn list_uuid_name() {
        let list = parse_list_uuid_name(&fixture("list_uuid_name.txt")).unwrap();
        assert_eq!(
            list,
            vec![
                (
                    "6695eb01-f6a4-8304-79aa-97f2502e193f".to_string(),
                    "test".to_string()
                ),
                (
                    "11111111-2222-3333-4444-555555555555".to_string(),
                    "name with  spaces".to_string()
                ),
                (
                    "5a4e1894-ec35-4572-886c-0d0cd3c9aba5".to_string(),
                    "off-ü".to_string()
                ),
            ]
        );
        assert!(parse_list_uuid_name("not-a-uuid name\n").is_err());
        assert!(parse_list_uuid_name("\n\n").unwrap().is_empty());
    }

    #[test]
    fn vol_list_table_with_blanks_and_unicode() {
        let vols = parse_vol_list(&fixture("vol_list.txt")).unwrap();
        assert_eq!(
            vols,
            vec![
                ("b.iso".to_string(), "/srv/isos/b.iso".to_string()),
                (
                    "debian 12.iso".to_string(),
                    "/srv/isos/debian 12.iso".to_string()
                ),
                ("größe.iso".to_string(), "/srv/isos/größe.iso".to_string()),
            ]
        );
        assert!(parse_vol_list(&fixture("vol_list_empty.txt"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn volume_xml() {
        let (name, path, cap) = parse_volume_xml(&fixture("vol_dumpxml.xml")).unwrap();
        assert_eq!(name, "debian 12.iso");
        assert_eq!(path.as_deref(), Some("/srv/isos/debian 12.iso"));
        assert_eq!(cap, Some(654_311_424));
        let (_, _, cap) =
            parse_volume_xml("<volume><name>x</name><capacity unit='KiB'>2</capacity></volume>")
                .unwrap();
        assert_eq!(cap, Some(2048));
        assert!(parse_volume_xml("<volume>").is_err());
    }

    #[test]
    fn agent_replies() {
        assert_eq!(
            parse_agent_reply(&fixture("agent_reply_osinfo.json")).unwrap()["id"],
            "ubuntu"
        );
        assert_eq!(
            parse_agent_reply("{\"return\":{}}\n").unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            parse_agent_reply("{\"error\":{\"class\":\"GenericError\",\"desc\":\"boom\"}}")
                .unwrap_err(),
            "boom"
        );
        assert!(parse_agent_reply("").is_err());
        assert!(parse_agent_reply("{\"id\":1}").is_err());
    }

    #[test]
    fn markers_split_batch_output() {
        let text = fixture("batch_dumpxml_stdout.txt");
        let markers: Vec<String> = (0..3).map(|i| format!("@@DIQ:abc:{i}@@")).collect();
        let parts = split_by_markers(&text, &markers).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("<domain type='test'"));
        assert!(parts[0].ends_with("</domain>"));
        assert_eq!(parts[1], "");
        let missing: Vec<String> = vec!["@@DIQ:abc:0@@".into(), "@@nope@@".into()];
        assert!(split_by_markers(&text, &missing).is_none());
        let err = fixture("batch_dumpxml_stderr.txt");
        let err_markers: Vec<String> = markers.iter().map(|m| format!("error: {m}")).collect();
        let parts = split_by_markers(&err, &err_markers).unwrap();
        assert_eq!(parts[0], "");
        assert_eq!(parts[1], "error: failed to get domain 'nope'");
    }

    #[test]
    fn stdin_mode_reply_is_found_between_prompts() {
        let out = fixture("stdin_agent_stdout.txt");
        let reply = stdin_command_output(&out, "@@DIQ-B-x@@", "@@DIQ-E-x@@").unwrap();
        assert_eq!(reply, "{\"return\":{\"count\":3,\"eof\":false}}");
        let none = stdin_command_output(&out, "@@DIQ-B-x@@", "@@nope@@");
        assert!(none.is_none());
        let failed = fixture("stdin_agent_stdout_failed.txt");
        assert_eq!(
            stdin_command_output(&failed, "@@DIQ-B-x@@", "@@DIQ-E-x@@"),
            Some("")
        );
    }

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
    fn tray_lock_texts() {
        assert_eq!(
            tray_locked_drive(&fixture("err_tray_timed_out.txt")).as_deref(),
            Some("sda")
        );
        assert_eq!(
            tray_locked_drive(&fixture("err_tray_qemu_locked.txt")).as_deref(),
            Some("")
        );
        assert_eq!(tray_locked_drive("error: some other failure"), None);
    }

    #[test]
    fn target_dev_of_device_xml() {
        assert_eq!(
            device_target_dev(
                "<disk type='file' device='cdrom'><driver name='qemu'/><target dev='sdb' bus='sata'/><readonly/></disk>"
            )
            .as_deref(),
            Some("sdb")
        );
        assert_eq!(device_target_dev("<disk/>"), None);
        assert_eq!(device_target_dev("not xml"), None);
    }
}
