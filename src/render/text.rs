//! Terminal-safe text and display-width layout. Guest-supplied strings (OS names, VM
//! names, paths) are untrusted: control characters and bidi overrides are replaced with
//! visible escapes before anything reaches a terminal.

use std::io::{self, Write};

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

pub use crate::units::clip;

/// Replace every control character (C0, DEL, C1), bidi control and invisible format
/// character with a visible `\xNN` / `\u{NNNN}` escape. Everything else passes through
/// unchanged.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let code = c as u32;
        if c.is_control() {
            if code <= 0xff {
                out.push_str(&format!("\\x{code:02x}"));
            } else {
                out.push_str(&format!("\\u{{{code:04x}}}"));
            }
        } else if is_invisible(c) {
            out.push_str(&format!("\\u{{{code:04x}}}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest line the tool prints about something (after escaping): a guest that
/// sends megabytes of error text or a mount point of 100 KB does not flood the terminal.
pub const MAX_LINE: usize = 2000;

/// `s` escaped and cut to [`MAX_LINE`] characters: what every message line goes through.
pub fn terminal_line(s: &str) -> String {
    clip(&sanitize(s), MAX_LINE)
}

/// Write one line and its newline to `out`, terminal-safe: the way commands print what
/// they have to say (a line break inside `line` shows as `\x0a`; see [`terminal_line`]).
pub fn write_line(out: &mut dyn std::io::Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{}", terminal_line(line))
}

/// Characters a terminal shows as nothing, or that reorder what follows: bidi controls,
/// zero-width and other format characters, tag characters.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00ad
            | 0x061c
            | 0x180e
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xe0000..=0xe007f
    )
}

/// Display width of `s` on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Cut `s` to at most `max` display columns, ending with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    // A sequence can be wider than its characters (`5` or `❤` with U+FE0F is an emoji
    // of two columns): measure what is kept as a whole.
    while width(&out) > max - 1 {
        out.pop();
    }
    out.push('…');
    out
}

/// `s` cut to `max` columns and padded with spaces to exactly `cell` columns
/// (`cell` ≥ `max`), so columns line up by display width.
pub fn cell(s: &str, max: usize, cell: usize) -> String {
    let mut t = truncate(s, max);
    let w = width(&t);
    for _ in w..cell {
        t.push(' ');
    }
    t
}

/// Several hosts' tables as one: a HOST column first, then each host's lines as its own
/// table has them; the header and rule (each table's first two lines) once. The one-host
/// layout stays exactly as it is.
pub fn write_with_host_column(out: &mut dyn Write, tables: &[(&str, String)]) -> io::Result<()> {
    let w = tables
        .iter()
        .map(|(h, _)| width(&sanitize(h)))
        .max()
        .unwrap_or(0)
        .clamp(4, 24);
    let mut header_done = false;
    for (host, table) in tables {
        let mut lines = table.lines();
        let (header, rule) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        if !header_done {
            writeln!(out, "{}{header}", cell("HOST", w, w + 1))?;
            writeln!(out, "{}{rule}", "-".repeat(w + 1))?;
            header_done = true;
        }
        let host = cell(&sanitize(host), w, w + 1);
        for l in lines {
            writeln!(out, "{host}{l}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_controls_visibly() {
        assert_eq!(sanitize("Ubuntu\x1b[31m red"), "Ubuntu\\x1b[31m red");
        assert_eq!(sanitize("a\nb\tc\u{7f}"), "a\\x0ab\\x09c\\x7f");
        assert_eq!(sanitize("x\u{9b}y"), "x\\x9by");
        assert_eq!(sanitize("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(sanitize("ad\u{200b}min\u{feff}"), "ad\\u{200b}min\\u{feff}");
        assert_eq!(sanitize("tag\u{e0041}"), "tag\\u{e0041}");
        assert_eq!(
            sanitize("CentOS Stream 10 (Coughlan)"),
            "CentOS Stream 10 (Coughlan)"
        );
        assert_eq!(sanitize("東京-vm é"), "東京-vm é");
    }

    #[test]
    fn lines_lose_their_controls() {
        let mut out = Vec::new();
        write_line(&mut out, "vm\u{202e}: ok").unwrap();
        assert_eq!(out, b"vm\\u{202e}: ok\n");
    }

    #[test]
    fn long_lines_are_clipped_with_what_was_left_out() {
        assert_eq!(clip("abcdef", 6), "abcdef");
        assert_eq!(clip("abcdef", 4), "abcd…[2 more bytes]");
        assert_eq!(clip("ééé", 1), "é…[4 more bytes]");
        let mut out = Vec::new();
        write_line(&mut out, &"\x1b".repeat(100_000)).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.len() < MAX_LINE + 40, "{}", line.len());
        assert!(line.ends_with(" more bytes]\n"));
    }

    #[test]
    fn truncates_by_display_width() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        assert_eq!(truncate("東京東京", 5), "東京…");
        assert_eq!(width(&truncate("東京東京", 4)), 3);
        assert_eq!(cell("東京", 20, 21).chars().count(), 2 + 17);
        assert_eq!(width(&cell("東京", 20, 21)), 21);
    }

    proptest! {
        #[test]
        fn sanitized_text_has_no_controls(s in any::<String>()) {
            let t = sanitize(&s);
            prop_assert!(!t.chars().any(|c| c.is_control() || is_invisible(c)));
        }

        #[test]
        fn cells_are_exactly_their_width(s in "\\PC{0,40}", max in 1usize..30) {
            let s = sanitize(&s);
            let c = cell(&s, max, max + 1);
            // Zero-width and wide characters can leave one column short of max.
            prop_assert!(width(&c) == max + 1);
        }
    }
}
