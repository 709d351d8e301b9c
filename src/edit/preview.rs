//! The preview shown before an upload: a unified diff of text, or sizes and hashes of
//! binary content. It returns plain lines; the prompter escapes them as it shows them.

use std::time::Duration;

use similar::{ChangeTag, TextDiff};

use crate::transfer::Summary;
use crate::units;

/// Lines of diff shown before the rest is summarised.
const PREVIEW_LINES: usize = 400;

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
    let (Some(a), Some(b)) = (as_text(old), as_text(new)) else {
        return vec![format!(
            "Binary content, no diff: {} (sha256 {}) in the guest -> {} (sha256 {}) edited.",
            units::bytes(old.len() as u64),
            &Summary::of_bytes(old).hex()[..12],
            units::bytes(new.len() as u64),
            &Summary::of_bytes(new).hex()[..12],
        )];
    };
    let crlf = |t: &str| (t.matches('\n').count(), t.matches("\r\n").count());
    let ((lf_a, cr_a), (lf_b, cr_b)) = (crlf(a), crlf(b));
    let all_crlf = cr_a == lf_a && cr_b == lf_b && lf_a + lf_b > 0;
    let show_cr = !all_crlf && cr_a + cr_b > 0;

    let diff = TextDiff::configure()
        .timeout(Duration::from_secs(2))
        .diff_lines(a, b);
    let mut lines = vec![
        format!("--- {vm}:{path} (in the guest)"),
        format!("+++ {vm}:{path} (edited)"),
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
                lines.push(l);
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
