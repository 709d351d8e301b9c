//! How many commands travel through one `virsh` and come back apart: quoting for
//! virsh's own command grammar, the markers that frame each command's output in a batch,
//! and the reply of a command read on stdin. Pure text functions, tested without virsh.

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

/// `text` without the lines of a batch's framing (`nonce` is the batch's own).
pub fn without_markers(text: &str, nonce: &str) -> String {
    let ours = format!("@@DIQ:{nonce}:");
    text.lines()
        .filter(|l| !l.contains(&ours))
        .flat_map(|l| [l, "\n"])
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::virsh::fixture;

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
}
