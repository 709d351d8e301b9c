//! Line-based prompts on any reader/writer, so every interactive flow can be driven by
//! piping input in a test. End of input is always a clean answer (`None`), never an error.
//!
//! The prompter is an output point: what flows say through it ([`Prompter::say`], the
//! questions, the list items) is escaped here, once, so guest- and host-supplied text
//! never reaches the terminal raw.

use std::io::{self, BufRead, Write};

use crate::render::text::{sanitize, terminal_line};

/// A question-and-answer session over a reader and a writer.
pub struct Prompter<'a> {
    input: &'a mut dyn BufRead,
    output: &'a mut dyn Write,
}

impl<'a> Prompter<'a> {
    pub fn new(input: &'a mut dyn BufRead, output: &'a mut dyn Write) -> Prompter<'a> {
        Prompter { input, output }
    }

    /// The raw output, for renderers that escape themselves (tables).
    pub fn out(&mut self) -> &mut dyn Write {
        self.output
    }

    /// Say one line, escaped (a line break inside it shows as `\x0a`: a guest string
    /// cannot fake a line of ours).
    pub fn say(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.output, "{}", terminal_line(line))
    }

    /// Print `question` (no newline, escaped), read one line. `None` at end of input.
    pub fn ask(&mut self, question: &str) -> io::Result<Option<String>> {
        write!(self.output, "{}", sanitize(question))?;
        self.output.flush()?;
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            writeln!(self.output)?;
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
    }

    /// Yes/no; empty input takes `default`. `None` at end of input.
    pub fn confirm(&mut self, question: &str, default: bool) -> io::Result<Option<bool>> {
        let hint = if default { "[Y/n]" } else { "[y/N]" };
        loop {
            let Some(a) = self.ask(&format!("{question} {hint} "))? else {
                return Ok(None);
            };
            match a.trim().to_ascii_lowercase().as_str() {
                "" => return Ok(Some(default)),
                "y" | "yes" => return Ok(Some(true)),
                "n" | "no" => return Ok(Some(false)),
                _ => writeln!(self.output, "Please answer y or n.")?,
            }
        }
    }

    /// A numbered list; the user types a number, an item's text (or its first word, e.g.
    /// a VM's name before its state), or a filter: a text that several items contain
    /// lists those (with their numbers) and asks again, one that a single item contains
    /// picks it. Lists longer than [`SHOWN`] show their first items and say how to narrow
    /// them, so a host with hundreds of VMs stays usable. Empty input or end of input →
    /// `None` (cancel).
    pub fn choose(&mut self, title: &str, items: &[String]) -> io::Result<Option<usize>> {
        if items.is_empty() {
            return Ok(None);
        }
        writeln!(self.output, "{}", terminal_line(title))?;
        let all: Vec<usize> = (0..items.len()).collect();
        self.list(items, &all)?;
        loop {
            let Some(a) = self.ask(&format!(
                "Choose 1-{}, a name or a filter (empty to cancel): ",
                items.len()
            ))?
            else {
                return Ok(None);
            };
            let a = a.trim();
            if a.is_empty() {
                return Ok(None);
            }
            if let Ok(n) = a.parse::<usize>() {
                if (1..=items.len()).contains(&n) {
                    return Ok(Some(n - 1));
                }
                writeln!(
                    self.output,
                    "{n} is not on the list: type a number from 1 to {}.",
                    items.len()
                )?;
                continue;
            }
            if let Some(i) = items.iter().position(|it| it == a) {
                return Ok(Some(i));
            }
            let by_name: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&i| items[i].split(' ').next() == Some(a))
                .collect();
            if let [i] = by_name[..] {
                return Ok(Some(i));
            }
            let needle = a.to_lowercase();
            let matching: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&i| items[i].to_lowercase().contains(&needle))
                .collect();
            match matching[..] {
                [i] => return Ok(Some(i)),
                [] => writeln!(
                    self.output,
                    "nothing on the list matches {:?}: type a number from 1 to {}, or another filter.",
                    sanitize(a),
                    items.len()
                )?,
                _ => {
                    writeln!(
                        self.output,
                        "{} match {:?}:",
                        matching.len(),
                        sanitize(a)
                    )?;
                    self.list(items, &matching)?;
                }
            }
        }
    }

    /// `items[shown…]` numbered by their place in `items`, at most [`SHOWN`] of them.
    fn list(&mut self, items: &[String], shown: &[usize]) -> io::Result<()> {
        for &i in shown.iter().take(SHOWN) {
            writeln!(self.output, "{:>3}) {}", i + 1, terminal_line(&items[i]))?;
        }
        if shown.len() > SHOWN {
            writeln!(
                self.output,
                "     … and {} more: type part of a name to narrow the list",
                shown.len() - SHOWN
            )?;
        }
        Ok(())
    }
}

/// How many items a list shows at once.
pub const SHOWN: usize = 30;

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(input: &str, f: impl FnOnce(&mut Prompter) -> T) -> (T, String) {
        let mut inp = io::Cursor::new(input.as_bytes().to_vec());
        let mut out = Vec::new();
        let r = f(&mut Prompter::new(&mut inp, &mut out));
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn choose_by_number_name_retry_and_cancel() {
        let items = vec!["alpha".to_string(), "beta".to_string()];
        let (r, out) = run("9\nbeta\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, Some(1));
        assert!(out.contains("  1) alpha"));
        assert!(out.contains("not on the list"));
        let (r, _) = run("2\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, Some(1));
        let (r, _) = run("\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, None);
        let (r, _) = run("", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, None);
    }

    #[test]
    fn long_lists_narrow_by_name_or_filter() {
        let items: Vec<String> = (1..=308)
            .map(|i| {
                format!(
                    "vm{i:03} ({})",
                    if i % 2 == 0 { "running" } else { "shut off" }
                )
            })
            .collect();
        // The first screenful and how to narrow it, not 308 lines.
        let (r, out) = run("vm250\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, Some(249));
        assert!(out.contains(" 30) vm030 (running)"), "{out}");
        assert!(!out.contains(" 31) "), "{out}");
        assert!(out.contains("… and 278 more: type part of a name to narrow the list"));
        // A filter with several matches lists them with their own numbers; then a number.
        let (r, out) = run("vm29\n293\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, Some(292));
        assert!(out.contains("10 match \"vm29\":"), "{out}");
        assert!(out.contains("293) vm293 (shut off)"), "{out}");
        // One match picks it; none says so; case does not matter.
        let (r, _) = run("VM007\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, Some(6));
        let (r, out) = run("zzz\n\n", |p| p.choose("VMs:", &items).unwrap());
        assert_eq!(r, None);
        assert!(out.contains("nothing on the list matches \"zzz\""), "{out}");
        let (_, out) = run("999\n\n", |p| p.choose("VMs:", &items).unwrap());
        assert!(out.contains("999 is not on the list: type a number from 1 to 308."));
    }

    #[test]
    fn everything_shown_is_escaped() {
        let items = vec!["vm\x1b[2J".to_string()];
        let (_, out) = run("\x1b]0;x\n\n", |p| {
            p.say("one\nline \u{202e}").unwrap();
            p.choose("VMs of \x07:", &items).unwrap()
        });
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("one\\x0aline \\u{202e}\n"), "{out:?}");
        assert!(out.contains("vm\\x1b[2J"), "{out:?}");
        assert!(out.contains("\\x1b]0;x"), "{out:?}");
    }

    #[test]
    fn confirm_defaults_and_eof() {
        assert_eq!(run("\n", |p| p.confirm("ok?", true).unwrap()).0, Some(true));
        assert_eq!(
            run("maybe\nn\n", |p| p.confirm("ok?", true).unwrap()).0,
            Some(false)
        );
        assert_eq!(run("", |p| p.confirm("ok?", true).unwrap()).0, None);
        assert_eq!(run("x\r\n", |p| p.ask("q").unwrap()).0, Some("x".into()));
    }
}
