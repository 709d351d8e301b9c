//! The preview shown before an upload: a unified diff of text, or sizes and hashes of
//! binary content. It returns plain lines; the prompter escapes them as it shows them.

use std::time::Duration;

use similar::{ChangeTag, TextDiff};

use crate::transfer::Summary;
use crate::units;

/// Lines of diff shown before the rest is summarised.
const PREVIEW_LINES: usize = 400;
/// Characters of one diff line shown before it is cut.
const LINE_CHARS: usize = 300;
/// Files above this size get sizes and hashes instead of a diff (a diff of two huge
/// files costs seconds and screens nobody reads); they are not even read for it.
pub const DIFF_MAX_BYTES: usize = 4 << 20;

/// One line of the preview, cut to [`LINE_CHARS`].
fn capped(line: String) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        None => line,
        Some((at, _)) => {
            let rest = line[at..].chars().count();
            format!("{}… ({rest} more characters)", &line[..at])
        }
    }
}

/// Sizes and hashes, for content that gets no diff.
fn summary(why: &str, old: &[u8], new: &[u8]) -> Vec<String> {
    sums(why, &Summary::of_bytes(old), &Summary::of_bytes(new))
}

/// Sizes and hashes from summaries already made.
pub fn sums(why: &str, old: &Summary, new: &Summary) -> Vec<String> {
    vec![format!(
        "{why}, no diff: {} (sha256 {}) in the guest -> {} (sha256 {}) edited.",
        units::bytes(old.size),
        &old.hex()[..12],
        units::bytes(new.size),
        &new.hex()[..12],
    )]
}

/// Binary content (NUL bytes or not UTF-8) gets sizes and hashes instead of a diff.
fn as_text(b: &[u8]) -> Option<&str> {
    if b.contains(&0) {
        return None;
    }
    std::str::from_utf8(b).ok()
}

/// The preview's lines. A carriage return is kept in a line only when the line endings
/// are not consistent, so CRLF files read normally but a CRLF→LF change shows.
pub fn preview(vm: &str, path: &str, old: &[u8], new: &[u8]) -> Vec<String> {
    if old.len().max(new.len()) > DIFF_MAX_BYTES {
        return summary("Too large to diff", old, new);
    }
    let (Some(a), Some(b)) = (as_text(old), as_text(new)) else {
        return summary("Binary content", old, new);
    };
    let crlf = |t: &str| (t.matches('\n').count(), t.matches("\r\n").count());
    let ((lf_a, cr_a), (lf_b, cr_b)) = (crlf(a), crlf(b));
    let all_crlf = cr_a == lf_a && cr_b == lf_b && lf_a + lf_b > 0;
    let show_cr = !all_crlf && cr_a + cr_b > 0;

    let diff = TextDiff::configure()
        .timeout(Duration::from_secs(2))
        .diff_lines(a, b);
    let mut lines = vec![
        capped(format!("--- {vm}:{path} (in the guest)")),
        capped(format!("+++ {vm}:{path} (edited)")),
    ];
    let mut hidden = 0usize;
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let mut block = vec![hunk.header().to_string()];
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            let mut text = change.value().strip_suffix('\n').unwrap_or(change.value());
            if !show_cr {
                text = text.strip_suffix('\r').unwrap_or(text);
            }
            block.push(format!("{sign}{text}"));
            if change.missing_newline() {
                block.push("\\ No newline at end of file".to_string());
            }
        }
        for l in block {
            if lines.len() < PREVIEW_LINES + 2 {
                lines.push(capped(l));
            } else {
                hidden += 1;
            }
        }
    }
    if hidden > 0 {
        lines.push(format!("... {hidden} more diff lines not shown"));
    }
    if all_crlf {
        lines.push("(CRLF line endings, kept as they are)".to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_and_huge_files_are_capped() {
        let long = format!("{}\n", "é".repeat(1000));
        let lines = preview("vm", "/f", b"a\n", long.as_bytes());
        let plus = lines
            .iter()
            .find(|l| l.starts_with('+') && !l.starts_with("+++"))
            .unwrap();
        assert!(plus.ends_with("… (701 more characters)"), "{plus}");
        assert!(plus.chars().count() < 330);
        let huge = vec![b'x'; DIFF_MAX_BYTES + 1];
        let lines = preview("vm", "/f", b"a", &huge);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("Too large to diff, no diff: 1 B"),
            "{}",
            lines[0]
        );
        // Many changed lines: 400 shown, the rest counted.
        let many: String = (0..2000).map(|i| format!("{i}\n")).collect();
        let lines = preview("vm", "/f", b"", many.as_bytes());
        assert!(lines.len() <= PREVIEW_LINES + 3);
        assert!(lines.last().unwrap().contains("more diff lines not shown"));
    }
}
