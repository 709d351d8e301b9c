//! The fuzz targets: one function per parser that reads outside data, shared by the
//! cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs` include this file by `#[path]`, run by
//! `scripts/fuzz.sh` on nightly) and by `tests/fuzz_replay.rs` (stable, in CI), which
//! replays `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through them and adds
//! a short proptest pass.
//!
//! Every target takes arbitrary bytes and must never panic. Besides "no panic" each one
//! asserts what must hold for any input (a "one line" error has no line break, a parsed
//! name is trimmed, ...) and, where the data has a printer on the other side, a round
//! trip: text printed the way virsh, QEMU's agent or the guest kernel prints it parses
//! back to exactly what was printed. Inputs are read as UTF-8 the way the tool reads
//! child output (`String::from_utf8_lossy`); targets that need several strings split the
//! input at the byte 0xFF, which never occurs in UTF-8.

#![allow(
    dead_code,
    reason = "each fuzz binary uses one target; the replay test uses them all"
)]

use std::collections::HashMap;
use std::io::Write as _;

use serde_json::{json, Value};
use unicode_width::UnicodeWidthChar;

use dismount_iso_qemu::agent::{AgentInfo, Filesystem, OsInfo};
use dismount_iso_qemu::config::{self, FileConfig, Overrides};
use dismount_iso_qemu::domxml::{self, MediaSource};
use dismount_iso_qemu::hypervisor::virsh::errors::{
    classify_connect_error, classify_domain_error, one_line_error,
};
use dismount_iso_qemu::hypervisor::virsh::framing::{
    fits_one_stdin_line, quote_for_virsh_shell, split_by_markers, stdin_command_output,
};
use dismount_iso_qemu::hypervisor::virsh::parse::{
    parse_dominfo, parse_domstats, parse_lines, parse_list_uuid_name, parse_vol_list,
    parse_volume_xml,
};
use dismount_iso_qemu::hypervisor::{
    agent_reply, classify_agent_message, device_target, tray_locked, DomainInfo, DomainState,
    HvError, MAX_DETAIL,
};
use dismount_iso_qemu::media::guest::{cdrom_mounts, parse_proc_mounts};
use dismount_iso_qemu::probe::cache::{now_unix, CacheEntry, OsCache};
use dismount_iso_qemu::probe::os;
use dismount_iso_qemu::render::text;
use dismount_iso_qemu::units;

/// A fuzz target: any bytes in, a panic for a bug.
pub type Target = fn(&[u8]);

/// Every target by name: the name is the cargo-fuzz binary, the corpus directory and the
/// regression directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("virsh_dominfo", virsh_dominfo),
    ("virsh_domstats", virsh_domstats),
    ("virsh_list", virsh_list),
    ("virsh_vol_list", virsh_vol_list),
    ("virsh_volume_xml", virsh_volume_xml),
    ("virsh_batch_framing", virsh_batch_framing),
    ("virsh_stdin_reply", virsh_stdin_reply),
    ("virsh_quote", virsh_quote),
    ("virsh_errors", virsh_errors),
    ("domain_xml", domain_xml),
    ("domain_xml_roundtrip", domain_xml_roundtrip),
    ("agent_reply", agent_reply_text),
    ("agent_typed", agent_typed),
    ("guest_proc_mounts", guest_proc_mounts),
    ("guest_os_text", guest_os_text),
    ("config_file", config_file),
    ("os_cache", os_cache),
    ("text_sanitize", text_sanitize),
];

// ---------------------------------------------------------------------------------------
// Helpers.

fn lossy(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The input cut at each 0xFF byte, each piece read as UTF-8.
fn pieces(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0xff).map(lossy).collect()
}

/// The first line of `s` (up to the first `\n`).
fn first_line(s: &str) -> &str {
    s.split('\n').next().unwrap_or_default()
}

/// Deterministic numbers derived from the input, for the printed side of round trips.
struct Dice(u64);

impl Dice {
    fn new(data: &[u8]) -> Dice {
        // FNV-1a.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Dice(h | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly ordinary numbers, sometimes the edges.
    fn number(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => self.below(1 << 20),
            3 => self.next() >> self.below(64),
            _ => self.next(),
        }
    }

    fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

/// What `is_cdrom_device` of the media module accepts: `srN`, optionally under `/dev/`.
fn is_cdrom_node(dev: &str) -> bool {
    let name = dev.strip_prefix("/dev/").unwrap_or(dev);
    name.strip_prefix("sr")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_bidi_control(c: char) -> bool {
    matches!(c as u32, 0x200e | 0x200f | 0x061c | 0x202a..=0x202e | 0x2066..=0x2069)
}

/// The input as a file, for the parsers that read one (config file, OS cache). Removed
/// again when dropped.
fn as_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("a temporary file");
    f.write_all(data).expect("write the temporary file");
    f.flush().expect("flush the temporary file");
    f
}

// ---------------------------------------------------------------------------------------
// virsh text.

/// The state words `virsh dominfo` prints (C locale).
const DOMINFO_STATES: &[(&str, DomainState)] = &[
    ("no state", DomainState::NoState),
    ("running", DomainState::Running),
    ("idle", DomainState::Blocked),
    ("paused", DomainState::Paused),
    ("in shutdown", DomainState::ShuttingDown),
    ("shut off", DomainState::ShutOff),
    ("crashed", DomainState::Crashed),
    ("pmsuspended", DomainState::PmSuspended),
];

/// `virsh dominfo`: any text; plus a dominfo printed the way virsh prints it (the name
/// taken from the input) reads back exactly, CPU time to the tenth of a second virsh
/// shows.
pub fn virsh_dominfo(data: &[u8]) {
    let input = lossy(data);
    if let Ok(info) = parse_dominfo(&input) {
        for field in [&info.name, &info.uuid] {
            assert!(
                !field.contains('\n'),
                "a dominfo field spans lines: {field:?}"
            );
            assert_eq!(field.trim(), field, "a dominfo field is not trimmed");
        }
        // What the table does with the numbers.
        let _ = units::memory_kib(info.memory_used_kib);
        let _ = units::memory_kib(info.memory_max_kib);
        let _ = units::cpu_time(info.cpu_time_ns / 1_000_000_000);
    }

    let mut dice = Dice::new(data);
    let name = match first_line(&input).trim() {
        "" => "vm",
        n => n,
    };
    let (word, state) = DOMINFO_STATES[dice.below(DOMINFO_STATES.len() as u64) as usize];
    let expected = DomainInfo {
        name: name.to_string(),
        uuid: dice.uuid(),
        state,
        persistent: dice.below(2) == 0,
        vcpus: dice.number() as u32,
        memory_max_kib: dice.number(),
        memory_used_kib: dice.number(),
        cpu_time_ns: dice.number() / 100_000_000 * 100_000_000,
        definition_tag: None,
    };
    let printed = format!(
        "Id:             1\nName:           {}\nUUID:           {}\nOS Type:        hvm\n\
         State:          {word}\nCPU(s):         {}\nCPU time:       {}.{}s\n\
         Max memory:     {} KiB\nUsed memory:    {} KiB\nPersistent:     {}\n\
         Autostart:      disable\nManaged save:   no\n\n",
        expected.name,
        expected.uuid,
        expected.vcpus,
        expected.cpu_time_ns / 1_000_000_000,
        expected.cpu_time_ns % 1_000_000_000 / 100_000_000,
        expected.memory_max_kib,
        expected.memory_used_kib,
        if expected.persistent { "yes" } else { "no" },
    );
    assert_eq!(
        parse_dominfo(&printed).as_ref(),
        Ok(&expected),
        "dominfo as virsh prints it:\n{printed}"
    );
}

/// `virsh domstats --raw`: any text; plus a record printed the way virsh prints it (the
/// name taken from the input, quotes and all) reads back exactly.
pub fn virsh_domstats(data: &[u8]) {
    let input = lossy(data);
    if let Ok(records) = parse_domstats(&input) {
        assert_eq!(
            records.len(),
            input.lines().filter(|l| l.starts_with("Domain: ")).count(),
            "one record per Domain line"
        );
        for r in &records {
            assert!(!r.name.contains('\n'));
            // The typed statistics: named devices only, vCPUs once each and in order.
            let stats = r.to_stats();
            assert_eq!(stats.name, r.name);
            assert!(stats.blocks.iter().all(|b| !b.name.is_empty()));
            assert!(stats.interfaces.iter().all(|i| !i.name.is_empty()));
            assert!(stats.vcpu.vcpus.windows(2).all(|w| w[0].id < w[1].id));
            if let Some(info) = r.to_info("u", true) {
                assert_eq!(Some(info.state), r.state());
                assert_eq!(info.name, r.name);
                if !info.state.is_active() {
                    assert_eq!(info.cpu_time_ns, 0, "CPU time of an inactive domain");
                }
            }
        }
    }

    let mut dice = Dice::new(data);
    let name = first_line(&input);
    let code = dice.below(9) as u32;
    let state = DomainState::from_libvirt(code);
    let max = dice.number();
    let used = dice.number();
    let vcpus = dice.number() as u32;
    let cpu = dice.number();
    let printed = format!(
        "Domain: '{name}'\n  state.state={code}\n  state.reason=1\n  cpu.time={cpu}\n  \
         balloon.current={used}\n  balloon.maximum={max}\n  vcpu.current={vcpus}\n  \
         vcpu.maximum={vcpus}\n\n"
    );
    let records = parse_domstats(&printed).unwrap_or_else(|e| panic!("{e}:\n{printed}"));
    assert_eq!(records.len(), 1, "{printed}");
    assert_eq!(records[0].name, name);
    let expected = DomainInfo {
        name: name.to_string(),
        uuid: "u".to_string(),
        state,
        persistent: false,
        vcpus,
        memory_max_kib: max,
        memory_used_kib: used,
        cpu_time_ns: if state.is_active() { cpu } else { 0 },
        definition_tag: None,
    };
    assert_eq!(records[0].to_info("u", false), Some(expected));
}

/// `virsh list --uuid --name` and the one-per-line listings: any text; plus a listing line
/// of a name virsh can print (trailing blanks are virsh's padding) reads back.
pub fn virsh_list(data: &[u8]) {
    let input = lossy(data);
    if let Ok(rows) = parse_list_uuid_name(&input) {
        assert_eq!(
            rows.len(),
            input.lines().filter(|l| !l.trim().is_empty()).count()
        );
        for (uuid, name) in &rows {
            assert_eq!(uuid.len(), 36, "{uuid:?}");
            assert!(!name.contains('\n') && !name.is_empty(), "{name:?}");
        }
    }
    for line in parse_lines(&input) {
        assert!(!line.is_empty() && line.trim() == line && !line.contains('\n'));
    }

    let mut dice = Dice::new(data);
    let uuid = dice.uuid();
    let name = match first_line(&input).trim_end() {
        n if n.trim().is_empty() => "vm",
        n => n,
    };
    let printed = format!("{uuid} {name}\n\n");
    assert_eq!(
        parse_list_uuid_name(&printed),
        Ok(vec![(uuid, name.to_string())]),
        "{printed:?}"
    );
}

/// Display width as the vol-list parser counts it.
fn columns(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// `virsh vol-list`: any text; plus a table laid out the way virsh lays it out (columns
/// padded to the widest cell, by display width) reads back, name and path.
pub fn virsh_vol_list(data: &[u8]) {
    let input = lossy(data);
    if let Ok(rows) = parse_vol_list(&input) {
        for (name, path) in &rows {
            assert!(!name.contains('\n') && !path.contains('\n'));
            assert_eq!(name.trim(), name);
            assert_eq!(path.trim(), path);
        }
    }

    let parts = pieces(data);
    let clean = |i: usize, default: &'static str| -> String {
        let s = parts
            .get(i)
            .map(|p| first_line(p).trim())
            .unwrap_or_default();
        if s.is_empty() {
            default.to_string()
        } else {
            s.to_string()
        }
    };
    let name = clean(0, "x.iso");
    let path = clean(1, "/srv/isos/x.iso");
    let path_col = 1 + columns(&name).max(4) + 3;
    let header = format!(" Name{}Path", " ".repeat(path_col - 5));
    let row = format!(" {name}{}{path}", " ".repeat(path_col - 1 - columns(&name)));
    let printed = format!("{header}\n{}\n{row}\n\n", "-".repeat(path_col + 10));
    assert_eq!(
        parse_vol_list(&printed),
        Ok(vec![(name, path)]),
        "vol-list as virsh prints it:\n{printed}"
    );
}

/// `virsh vol-dumpxml`: any text; plus a volume XML with escaped name and path reads back.
pub fn virsh_volume_xml(data: &[u8]) {
    let input = lossy(data);
    if let Ok((name, path, _capacity)) = parse_volume_xml(&input) {
        assert_eq!(name.trim(), name);
        if let Some(p) = path {
            assert_eq!(p.trim(), p);
        }
    }

    let parts = pieces(data);
    let name = parts.first().cloned().unwrap_or_default();
    let path = parts.get(1).cloned().unwrap_or_default();
    let (Ok(name_xml), Ok(path_xml)) = (domxml::escape_attr(&name), domxml::escape_attr(&path))
    else {
        return;
    };
    let mut dice = Dice::new(data);
    let units: [(&str, u64); 6] = [
        ("bytes", 1),
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("GB", 1_000_000_000),
    ];
    let (unit, factor) = units[dice.below(units.len() as u64) as usize];
    let value = dice.number();
    let xml = format!(
        "<volume type='file'>\n  <name>{name_xml}</name>\n  <capacity unit='{unit}'>{value}</capacity>\n  \
         <target>\n    <path>{path_xml}</path>\n  </target>\n</volume>\n"
    );
    let parsed = parse_volume_xml(&xml);
    if name.is_empty() {
        assert!(parsed.is_err(), "a volume without a name: {xml}");
        return;
    }
    let expected_path = (!path.is_empty()).then(|| path.trim().to_string());
    assert_eq!(
        parsed,
        Ok((
            name.trim().to_string(),
            expected_path,
            value.checked_mul(factor)
        )),
        "{xml}"
    );
}

// ---------------------------------------------------------------------------------------
// Batch framing.

/// Batch output framed by markers: any text split by fixed markers (those of the
/// fixtures); plus outputs framed the way `echo MARKER ; cmd ; echo MARKER` prints them
/// come apart into exactly those outputs.
pub fn virsh_batch_framing(data: &[u8]) {
    let input = lossy(data);
    let markers: Vec<String> = (0..3).map(|i| format!("@@DIQ:abc:{i}@@")).collect();
    let err_markers: Vec<String> = markers.iter().map(|m| format!("error: {m}")).collect();
    for set in [&markers, &err_markers] {
        if let Some(parts) = split_by_markers(&input, set) {
            assert_eq!(parts.len(), set.len() - 1);
            let base = input.as_ptr() as usize;
            for (i, p) in parts.iter().enumerate() {
                let at = p.as_ptr() as usize - base;
                assert!(at + p.len() <= input.len(), "a part outside the text");
                assert!(
                    !p.contains(set[i + 1].as_str()),
                    "a part holds its end marker"
                );
                assert_eq!(p.trim_matches(['\n', '\r']), *p);
            }
        }
    }

    // The model: up to three command outputs from the input.
    let outputs: Vec<String> = pieces(data).into_iter().take(3).collect();
    if outputs.iter().any(|o| o.contains("@@DIQ:")) {
        return; // Output that prints our marker cannot be framed by it.
    }
    let markers: Vec<String> = (0..=outputs.len())
        .map(|i| format!("@@DIQ:123-4:{i}@@"))
        .collect();
    let mut stdout = String::new();
    let mut stderr = String::new();
    for (i, out) in outputs.iter().enumerate() {
        stdout.push_str(&format!("{}\n{out}\n", markers[i]));
        // Errors go to stderr; the same text serves for it.
        stderr.push_str(&format!("error: {}\n{out}", markers[i]));
    }
    stdout.push_str(&format!("{}\n", markers[outputs.len()]));
    stderr.push_str(&format!("error: {}\n", markers[outputs.len()]));
    let expected: Vec<&str> = outputs
        .iter()
        .map(|o| o.trim_matches(['\n', '\r']))
        .collect();
    assert_eq!(
        split_by_markers(&stdout, &markers),
        Some(expected.clone()),
        "{stdout:?}"
    );
    let err_markers: Vec<String> = markers.iter().map(|m| format!("error: {m}")).collect();
    assert_eq!(
        split_by_markers(&stderr, &err_markers),
        Some(expected),
        "{stderr:?}"
    );
}

/// Where virsh's readline echo puts the reply of a command read on stdin: any text
/// between the fixtures' markers; plus the transcript virsh prints for a real exchange
/// (request and reply carrying the input as a string) gives back exactly the reply,
/// and the reply's `return` is the input.
pub fn virsh_stdin_reply(data: &[u8]) {
    let input = lossy(data);
    if let Some(reply) = stdin_command_output(&input, "@@DIQ-B-x@@", "@@DIQ-E-x@@") {
        assert!(!reply.contains('\n'), "the reply is one line: {reply:?}");
        assert!(!reply.ends_with('\r'));
        assert!(input.contains(reply));
        agent_reply_invariants(reply);
    }

    if input.contains("@@DIQ-") {
        return; // Text that prints our marker cannot be framed by it.
    }
    let request = serde_json::to_string(&json!({
        "execute": "guest-file-open",
        "arguments": {"path": input, "mode": "r"},
    }))
    .expect("JSON");
    let reply = serde_json::to_string(&json!({ "return": input })).expect("JSON");
    let transcript = |reply: &str| {
        format!(
            "virsh # echo '@@DIQ''-B-7@@'\n@@DIQ-B-7@@virsh # echo --err '@@DIQ''-B-7@@'\n\
             virsh # qemu-agent-command --domain 'vm' --timeout 5 {}\n\
             {reply}virsh # echo '@@DIQ''-E-7@@'\n@@DIQ-E-7@@virsh # echo --err '@@DIQ''-E-7@@'\n\
             virsh # ",
            quote_for_virsh_shell(&request)
        )
    };
    let out = transcript(&reply);
    let got = stdin_command_output(&out, "@@DIQ-B-7@@", "@@DIQ-E-7@@");
    assert_eq!(got, Some(reply.as_str()), "{out:?}");
    assert_eq!(
        agent_reply("vm", "guest-file-open", &reply),
        Ok(Value::String(input.clone()))
    );
    // A command that printed nothing (the error is on stderr).
    let out = transcript("");
    assert_eq!(
        stdin_command_output(&out, "@@DIQ-B-7@@", "@@DIQ-E-7@@"),
        Some(""),
        "{out:?}"
    );
}

/// virsh's tokenizer for commands given as one argument or on stdin
/// (`vshCommandStringGetArg` of libvirt 9), for the quoting round trip. Stops at a NUL
/// like the C string it works on; `None` for an unbalanced quote or a dangling backslash.
fn virsh_tokens(line: &str) -> Option<Vec<String>> {
    let line = line.split('\0').next().unwrap_or_default();
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.peek() {
            None => return Some(tokens),
            Some(';') | Some('\n') => {
                chars.next();
                continue;
            }
            Some('#') => {
                // A comment to the end of the line.
                while chars.next().is_some_and(|c| c != '\n') {}
                continue;
            }
            _ => {}
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
                match chars.next() {
                    None => return None,
                    Some('\n') => {}
                    Some(n) => tok.push(n),
                }
            } else if !sq && c == '"' {
                dq = !dq;
            } else {
                tok.push(c);
            }
        }
        if sq || dq {
            return None;
        }
        tokens.push(tok);
    }
}

/// Quoting for virsh's command grammar: the quoted text is always exactly one token that
/// virsh reads back as the original, whatever it holds (but NUL, which no C string can).
pub fn virsh_quote(data: &[u8]) {
    let token = lossy(data);
    let quoted = quote_for_virsh_shell(&token);
    assert!(quoted.starts_with('\'') && quoted.ends_with('\'') && quoted.len() >= 2);
    assert_eq!(
        fits_one_stdin_line(&token),
        !token.contains(['\n', '\r']),
        "{token:?}"
    );
    if token.contains('\0') {
        return;
    }
    let line = format!("cmd --opt {quoted} tail");
    assert_eq!(
        virsh_tokens(&line),
        Some(vec![
            "cmd".to_string(),
            "--opt".to_string(),
            token.clone(),
            "tail".to_string()
        ]),
        "{line:?}"
    );
    let two = format!("{quoted} ; {quoted}");
    assert_eq!(virsh_tokens(&two), Some(vec![token.clone(), token]));
}

/// Whether a line of virsh's stderr says anything, once the `error:` prefix is gone.
fn says_something(line: &str) -> bool {
    let l = line.trim();
    let l = l.strip_prefix("error:").unwrap_or(l);
    !l.trim().is_empty()
}

/// virsh's error text: the one-line summary has no line break and never drops the only
/// thing virsh said; the classification keeps the caller's URI and domain and reports
/// the summary.
pub fn virsh_errors(data: &[u8]) {
    let stderr = lossy(data);
    let line = one_line_error(&stderr);
    assert!(!line.contains('\n'), "one line: {line:?}");
    if stderr.lines().any(says_something) {
        assert!(
            !line.is_empty(),
            "virsh said something but the summary is empty: {stderr:?}"
        );
    }
    let uri = "qemu:///system";
    let connect = classify_connect_error(uri, &stderr);
    let domain = classify_domain_error("dumpxml", uri, "vm", &stderr);
    if let Some(c) = &connect {
        assert_eq!(
            &domain, c,
            "a connection failure is one whatever the command"
        );
    }
    match &domain {
        HvError::Unreachable { uri: u, detail }
        | HvError::PermissionDenied { uri: u, detail }
        | HvError::BadUri { uri: u, detail } => {
            assert_eq!(u, uri);
            assert_eq!(detail, &line);
        }
        HvError::NoSuchDomain(d) | HvError::DomainNotRunning(d) => assert_eq!(d, "vm"),
        HvError::Failed { operation, detail } => {
            assert_eq!(*operation, "dumpxml");
            assert_eq!(detail, &line);
        }
        other => panic!("a domain error classified as {other:?}"),
    }
    let _ = domain.to_string();
}

// ---------------------------------------------------------------------------------------
// Domain XML.

/// A device XML for one CD-ROM of `drive`, parsed back inside a domain: it must describe
/// the same drive. This is how mount and eject rebuild a drive they read.
fn device_xml_round_trip(target: &str, bus: Option<&str>, source: Option<MediaSource<'_>>) {
    let Ok(xml) = domxml::cdrom_device_xml(target, bus, source) else {
        return;
    };
    let doc = format!("<domain><devices>{xml}</devices></domain>");
    let facts = domxml::parse(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
    assert_eq!(facts.cdroms.len(), 1, "{doc}");
    let drive = &facts.cdroms[0];
    assert_eq!(drive.target, target, "{doc}");
    assert_eq!(drive.bus.as_deref(), bus, "{doc}");
    let path = match source {
        Some(MediaSource::File(p)) | Some(MediaSource::Block(p)) => Some(p),
        None => None,
    };
    assert_eq!(
        drive.source.as_deref(),
        path.filter(|p| !p.is_empty()),
        "{doc}"
    );
    assert!(drive.readonly);
    assert_eq!(facts.disk_targets, vec![target.to_string()]);
    assert_eq!(device_target(&xml).as_deref(), Some(target), "{xml}");
}

/// Domain XML: any text; what it yields is consistent, and every CD-ROM it describes can
/// be written back as device XML that describes the same drive (what XML carried once,
/// it can carry again).
pub fn domain_xml(data: &[u8]) {
    let xml = lossy(data);
    let Ok(facts) = domxml::parse(&xml) else {
        return;
    };
    for (target, _) in &facts.cdrom_addresses {
        assert!(facts.cdroms.iter().any(|c| &c.target == target));
    }
    for (i, c) in facts.controllers.iter().enumerate() {
        assert!(!facts.controllers[..i].contains(c), "controllers repeat");
    }
    for drive in &facts.cdroms {
        assert_ne!(drive.source.as_deref(), Some(""));
        for value in [
            Some(&drive.target),
            drive.bus.as_ref(),
            drive.source.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                domxml::escape_attr(value).is_ok(),
                "a value read from XML cannot be written as XML: {value:?}"
            );
        }
        device_xml_round_trip(
            &drive.target,
            drive.bus.as_deref(),
            drive.source.as_deref().map(MediaSource::File),
        );
    }
}

/// Device XML built from any strings (path, target, bus: the input cut at 0xFF): either
/// refused for a character XML cannot carry, or parsed back to exactly those strings;
/// and `escape_attr` output is read back by an XML parser as the original value.
pub fn domain_xml_roundtrip(data: &[u8]) {
    let parts = pieces(data);
    let path = parts[0].as_str();
    let target = parts.get(1).map(String::as_str).unwrap_or("sda");
    let bus = parts.get(2).map(String::as_str);
    let carryable = |s: &str| {
        s.chars().all(|c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
        })
    };
    let source = if data.first().is_some_and(|b| b & 1 == 1) {
        MediaSource::Block(path)
    } else {
        MediaSource::File(path)
    };
    let built = domxml::cdrom_device_xml(target, bus, Some(source));
    let all_carryable = carryable(path) && carryable(target) && bus.is_none_or(carryable);
    assert_eq!(built.is_ok(), all_carryable, "{built:?}");
    device_xml_round_trip(target, bus, Some(source));
    device_xml_round_trip(target, bus, None);

    for value in &parts {
        match domxml::escape_attr(value) {
            Ok(escaped) => {
                for q in ['\'', '"'] {
                    let doc = format!("<x a={q}{escaped}{q}/>");
                    let parsed =
                        roxmltree::Document::parse(&doc).unwrap_or_else(|e| panic!("{e}: {doc:?}"));
                    assert_eq!(parsed.root_element().attribute("a"), Some(value.as_str()));
                }
            }
            Err(e) => {
                assert!(!carryable(value));
                assert!(e.contains("U+"), "{e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Guest agent replies.

const DRIVE_XML: &str = "<disk type='file' device='cdrom'><driver name='qemu'/><target dev='sdb' bus='sata'/><readonly/></disk>";

fn agent_reply_invariants(reply: &str) {
    match agent_reply("vm", "guest-x", reply) {
        Ok(v) => {
            let doc: Value = serde_json::from_str(reply.trim())
                .unwrap_or_else(|e| panic!("success for a reply that is not JSON ({e})"));
            assert_eq!(
                doc.get("return"),
                Some(&v),
                "success without a return member"
            );
        }
        Err(e) => {
            let _ = e.to_string();
            let returned = serde_json::from_str::<Value>(reply.trim())
                .ok()
                .and_then(|d| d.get("return").cloned());
            assert_eq!(returned, None, "a reply with a return member failed: {e:?}");
            match e {
                HvError::AgentCommandFailed {
                    domain, command, ..
                } => assert_eq!((domain.as_str(), command.as_str()), ("vm", "guest-x")),
                HvError::AgentCommandDisabled { domain, command } => {
                    assert_eq!((domain.as_str(), command.as_str()), ("vm", "guest-x"))
                }
                HvError::AgentNotConnected(d)
                | HvError::AgentBroken(d)
                | HvError::AgentTimeout(d)
                | HvError::DomainNotRunning(d)
                | HvError::NoSuchDomain(d) => assert_eq!(d, "vm"),
                other => panic!("an agent reply classified as {other:?}"),
            }
        }
    }
}

/// Agent reply text as libvirt hands it over, and libvirt's agent error messages: success
/// only for JSON with a `return` member; errors keep the domain and command; a tray-lock
/// message names a drive.
pub fn agent_reply_text(data: &[u8]) {
    let text = lossy(data);
    agent_reply_invariants(&text);

    match classify_agent_message("vm", "guest-x", &text) {
        HvError::AgentCommandFailed {
            domain,
            command,
            message,
        } => {
            assert_eq!((domain.as_str(), command.as_str()), ("vm", "guest-x"));
            assert_eq!(message, units::clip(text.trim(), MAX_DETAIL));
        }
        HvError::AgentCommandDisabled { domain, command } => {
            assert_eq!((domain.as_str(), command.as_str()), ("vm", "guest-x"))
        }
        HvError::AgentNotConnected(d)
        | HvError::AgentBroken(d)
        | HvError::AgentTimeout(d)
        | HvError::DomainNotRunning(d)
        | HvError::NoSuchDomain(d) => assert_eq!(d, "vm"),
        other => panic!("an agent message classified as {other:?}"),
    }

    for (device_xml, from_xml) in [(DRIVE_XML, Some("sdb")), ("<disk/>", None)] {
        match tray_locked("vm", device_xml, &text) {
            Some(HvError::TrayLocked { domain, drive }) => {
                assert_eq!(domain, "vm");
                assert!(!drive.is_empty(), "a tray lock names no drive");
                if let Some(t) = from_xml {
                    assert_eq!(drive, t);
                }
            }
            Some(other) => panic!("a tray message classified as {other:?}"),
            None => {}
        }
    }
    let _ = device_target(&text);
}

/// The typed agent replies (guest-get-osinfo, guest-info, guest-get-fsinfo) from any JSON,
/// and what the tool derives from them: an OS name that is trimmed and not empty, command
/// checks that agree with each other, and CD-ROM mounts on absolute paths and CD-ROM
/// device nodes only.
pub fn agent_typed(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let value = doc.get("return").cloned().unwrap_or(doc);

    if let Ok(info) = serde_json::from_value::<OsInfo>(value.clone()) {
        if let Some(t) = os::from_osinfo(&info) {
            assert!(!t.is_empty() && t.trim() == t, "OS name {t:?}");
            let shown = text::sanitize(&t);
            assert!(!shown.chars().any(|c| c.is_control()));
        }
    }

    if let Ok(info) = serde_json::from_value::<AgentInfo>(value.clone()) {
        let names: Vec<&str> = info.commands.iter().map(|c| c.name.as_str()).collect();
        for name in names
            .iter()
            .copied()
            .chain(["guest-exec", "guest-get-fsinfo"])
        {
            assert_eq!(info.allows(name), info.is_enabled(name) == Some(true));
        }
        assert_eq!(
            info.can_exec(),
            info.allows("guest-exec") && info.allows("guest-exec-status")
        );
        let needed = ["guest-exec", "guest-exec-status", "guest-file-open"];
        let refused = info.refused(&needed);
        for n in needed {
            assert_eq!(refused.iter().any(|r| r == n), !info.allows(n));
        }
    }

    if let Ok(filesystems) = serde_json::from_value::<Vec<Filesystem>>(value) {
        let mounts = cdrom_mounts(&filesystems);
        assert!(mounts.len() <= filesystems.len());
        for m in &mounts {
            assert!(m.mountpoint.starts_with('/'), "{m:?}");
            assert!(
                filesystems.iter().any(|f| f.mountpoint == m.mountpoint),
                "{m:?}"
            );
            assert!(is_cdrom_node(&m.device), "not a CD-ROM device: {m:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Text the guest prints (through guest-exec).

/// `/proc/mounts` the way the kernel escapes it (space, tab, newline and backslash as
/// octal; everything else raw).
fn kernel_escape(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The guest's `/proc/mounts`: any text gives CD-ROM mounts only; and a mount point the
/// kernel lists (any path, escaped as the kernel escapes it) reads back exactly, since
/// it is what gets unmounted.
pub fn guest_proc_mounts(data: &[u8]) {
    let input = lossy(data);
    let mounts = parse_proc_mounts(&input);
    assert!(mounts.len() <= input.lines().count());
    for m in &mounts {
        assert!(is_cdrom_node(&m.device), "{m:?}");
        assert!(!m.mountpoint.is_empty());
        assert_eq!(m.address, None);
    }

    let mountpoint = format!("/{}", input.replace('\0', ""));
    let text = format!(
        "proc /proc proc rw,nosuid 0 0\n/dev/sr0 {} iso9660 ro,relatime 0 0\n/dev/vda1 / ext4 rw 0 0\n",
        kernel_escape(&mountpoint)
    );
    let mounts = parse_proc_mounts(&text);
    assert_eq!(mounts.len(), 1, "{text:?}");
    assert_eq!(mounts[0].device, "/dev/sr0");
    assert_eq!(mounts[0].mountpoint, mountpoint, "{text:?}");
}

/// What the guest prints about its OS (os-release, `uname -sr`, `ver`) and libosinfo ids:
/// a name is never empty or multi-line; an os-release value quoted the way the format
/// quotes it reads back; without a database a libosinfo id's name is derived from it.
pub fn guest_os_text(data: &[u8]) {
    let input = lossy(data);
    if let Some((name, id)) = os::from_os_release(&input) {
        assert!(!name.is_empty() && !name.contains('\n'), "{name:?}");
        if let Some(id) = id {
            assert!(!id.is_empty() && !id.contains('\n'));
        }
    }
    if let Some(t) = os::from_uname(&input) {
        assert!(!t.is_empty() && t.trim() == t && !t.contains('\n'), "{t:?}");
    }
    if let Some(t) = os::from_windows_ver(&input) {
        assert!(t.starts_with("Microsoft ") && !t.contains('\n'), "{t:?}");
    }
    let derived = os::derive_name(&input);
    let db = os::OsinfoDb::at(std::path::Path::new("/nonexistent/osinfo"));
    assert_eq!(db.name_for(&input), derived);

    // os-release: a double-quoted value with `\`, `"`, `$` and backquote escaped.
    let value = first_line(&input);
    if !value.is_empty() {
        let mut quoted = String::from("\"");
        for c in value.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        let release = format!("NAME=Linux\nPRETTY_NAME={quoted}\nID=linux\nVERSION_ID=1\n");
        assert_eq!(
            os::from_os_release(&release),
            Some((value.to_string(), Some("linux".to_string()))),
            "{release:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Files the tool reads.

/// The config file: any bytes give settings or one line of error naming the file; what
/// resolves holds the documented limits, and the same values as flags resolve alike.
pub fn config_file(data: &[u8]) {
    let file = as_file(data);
    let file_config = match config::read_file(file.path(), true) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.contains('\n'), "a config error spans lines: {e:?}");
            assert!(e.contains(&file.path().display().to_string()), "{e}");
            return;
        }
    };
    let env_uri = Some("test:///default".to_string());
    let from_file =
        config::resolve_with(&Overrides::default(), env_uri.clone(), file_config.clone());
    let as_flags = Overrides {
        values: file_config.clone(),
        config_file: None,
    };
    let from_flags = config::resolve_with(&as_flags, env_uri, FileConfig::default());
    match (&from_file, &from_flags) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.uri.as_deref(), Some("test:///default"), "env beats file");
            assert_eq!(
                b.uri,
                file_config.uri.clone().or(a.uri.clone()),
                "flag beats env"
            );
            let without_uri = |s: &config::Settings| config::Settings {
                uri: None,
                ..s.clone()
            };
            assert_eq!(
                without_uri(a),
                without_uri(b),
                "flags and file resolve alike"
            );
            assert!((1..=1024).contains(&a.jobs));
            for d in [a.scan_deadline, a.agent_timeout] {
                assert!(!d.is_zero() && d.as_secs_f64() <= 3600.0, "{d:?}");
            }
            assert!(a.cache_ttl.as_secs_f64() <= config::MAX_SECONDS);
            assert!(a.max_size > 0);
        }
        (Err(a), Err(b)) => {
            assert!(!a.contains('\n') && !b.contains('\n'));
        }
        _ => panic!("file and flags disagree: {from_file:?} / {from_flags:?}"),
    }
}

/// The OS cache file: any bytes load (corrupt means empty); an entry is served only
/// while it is younger than the TTL, never from the future (but for a minute of clock
/// skew); entries survive a serialization round trip.
pub fn os_cache(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Mirror {
        version: u32,
        entries: HashMap<String, CacheEntry>,
    }
    let file = as_file(data);
    let cache = OsCache::load(file.path());
    let Ok(mirror) = serde_json::from_slice::<Mirror>(data) else {
        assert!(cache.get("qemu:///system", "u", u64::MAX).is_none());
        return;
    };
    for (key, entry) in &mirror.entries {
        let back: CacheEntry = serde_json::from_str(&serde_json::to_string(entry).expect("JSON"))
            .expect("an entry reads back");
        assert_eq!(&back, entry);
        let Some((uri, uuid)) = key.rsplit_once(' ') else {
            continue;
        };
        for ttl in [0, 1, 60, 86_400, u64::MAX] {
            let before = now_unix();
            let got = cache.get(uri, uuid, ttl);
            let after = now_unix();
            let Some(got) = got else { continue };
            assert_eq!(mirror.version, 1, "an entry of another format version");
            assert_eq!(got, entry);
            // `load` allows a minute of clock skew, no more: an entry from further in
            // the future would never expire.
            assert!(
                got.stored_at <= after + 60,
                "an entry stored in the future ({}, now {after}) is served",
                got.stored_at
            );
            assert!(
                before.saturating_sub(got.stored_at) < ttl,
                "an expired entry is served"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output of untrusted text.

/// Terminal-safe text: sanitized text has no control or bidi characters and sanitizing
/// twice changes nothing; a truncated cell fits its width and a padded cell is exactly
/// its width (first byte: the width).
pub fn text_sanitize(data: &[u8]) {
    let (max, rest) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b % 40), rest),
        None => (0, data),
    };
    let raw = lossy(rest);
    let shown = text::sanitize(&raw);
    assert!(
        !shown.chars().any(|c| c.is_control() || is_bidi_control(c)),
        "{shown:?}"
    );
    assert_eq!(text::sanitize(&shown), shown);
    let mut line = Vec::new();
    text::write_line(&mut line, &raw).expect("write to a Vec");
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);

    let cut = text::truncate(&shown, max);
    assert!(
        text::width(&cut) <= max,
        "truncate({shown:?}, {max}) = {cut:?} is {} columns",
        text::width(&cut)
    );
    if text::width(&shown) <= max {
        assert_eq!(cut, shown);
    }
    let cell = text::cell(&shown, max, max + 1);
    assert_eq!(
        text::width(&cell),
        max + 1,
        "cell({shown:?}, {max}, {}) = {cell:?}",
        max + 1
    );
}
