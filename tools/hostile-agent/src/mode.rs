//! The agent's modes (what it lies about), as the control port names them, and the
//! hostile strings of the `escapes` mode.

use std::fmt;

/// Mount points `many-mounts` reports when no count is given.
pub const DEFAULT_MANY_MOUNTS: usize = 5000;
/// The most `many-mounts N` accepts: about 240 bytes each, so 60000 make a 14 MB reply,
/// past libvirt's 10 MiB limit (for tests that want that limit hit), and still fit the
/// 256 MiB guest (a serde_json value tree of them did not: the OOM killer took it).
pub const MAX_MANY_MOUNTS: usize = 60_000;
/// The most `slow N` accepts, in seconds.
pub const MAX_SLOW_SECS: f64 = 3600.0;
/// The size of every hostile string of `escapes`.
pub const HOSTILE_LEN: usize = 100 * 1024;

/// How `bad-json` breaks its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadJson {
    /// Not JSON at all: the reply with a member that has no value.
    Syntax,
    /// Well-formed JSON whose strings hold bytes that are not UTF-8.
    Utf8,
    /// The first half of the reply, then the newline.
    Truncated,
    /// Valid JSON that is not an object (an array holding the reply).
    NotObject,
    /// An object with neither `return` nor `error`.
    Unknown,
}

impl BadJson {
    pub const ALL: [BadJson; 5] = [
        BadJson::Syntax,
        BadJson::Utf8,
        BadJson::Truncated,
        BadJson::NotObject,
        BadJson::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BadJson::Syntax => "syntax",
            BadJson::Utf8 => "utf8",
            BadJson::Truncated => "truncated",
            BadJson::NotObject => "not-object",
            BadJson::Unknown => "unknown",
        }
    }
}

/// Which way `count-lies` lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// count = the real length + 4096.
    More,
    /// count = half the real length.
    Less,
}

/// What the agent does; see the crate documentation for each.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Honest,
    Escapes,
    EndlessRead,
    CountLies(Lie),
    ExecNeverExits,
    ManyMounts(usize),
    Slow(f64),
    BadJson(BadJson),
    /// `false`: guest-get-osinfo disabled (as by qemu-ga's --block-rpcs), so a tool must
    /// ask `cmd.exe /c ver`.
    Windows {
        osinfo: bool,
    },
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Honest => f.write_str("honest"),
            Mode::Escapes => f.write_str("escapes"),
            Mode::EndlessRead => f.write_str("endless-read"),
            Mode::CountLies(Lie::More) => f.write_str("count-lies more"),
            Mode::CountLies(Lie::Less) => f.write_str("count-lies less"),
            Mode::ExecNeverExits => f.write_str("exec-never-exits"),
            Mode::ManyMounts(n) => write!(f, "many-mounts {n}"),
            Mode::Slow(s) => write!(f, "slow {s}"),
            Mode::BadJson(k) => write!(f, "bad-json {}", k.name()),
            Mode::Windows { osinfo: true } => f.write_str("windows"),
            Mode::Windows { osinfo: false } => f.write_str("windows no-osinfo"),
        }
    }
}

impl Mode {
    /// A control line: `NAME` or `NAME ARG`.
    pub fn parse(line: &str) -> Result<Mode, String> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or("empty line")?;
        let arg = words.next();
        if words.next().is_some() {
            return Err(format!("{name}: at most one argument"));
        }
        let no_arg = |m: Mode| match arg {
            None => Ok(m),
            Some(a) => Err(format!("{name} takes no argument (got {a:?})")),
        };
        match name {
            "honest" => no_arg(Mode::Honest),
            "escapes" => no_arg(Mode::Escapes),
            "endless-read" => no_arg(Mode::EndlessRead),
            "exec-never-exits" => no_arg(Mode::ExecNeverExits),
            "windows" => match arg.unwrap_or("osinfo") {
                "osinfo" => Ok(Mode::Windows { osinfo: true }),
                "no-osinfo" => Ok(Mode::Windows { osinfo: false }),
                a => Err(format!("windows takes osinfo or no-osinfo (got {a:?})")),
            },
            "count-lies" => match arg.unwrap_or("more") {
                "more" => Ok(Mode::CountLies(Lie::More)),
                "less" => Ok(Mode::CountLies(Lie::Less)),
                a => Err(format!("count-lies takes more or less (got {a:?})")),
            },
            "many-mounts" => {
                let n = match arg {
                    None => DEFAULT_MANY_MOUNTS,
                    Some(a) => a
                        .parse()
                        .map_err(|_| format!("many-mounts takes a count (got {a:?})"))?,
                };
                if n > MAX_MANY_MOUNTS {
                    return Err(format!("many-mounts takes at most {MAX_MANY_MOUNTS}"));
                }
                Ok(Mode::ManyMounts(n))
            }
            "slow" => {
                let a = arg.ok_or("slow takes the delay in seconds (slow 4.5)")?;
                let s: f64 = a
                    .parse()
                    .map_err(|_| format!("slow takes seconds (got {a:?})"))?;
                if !(0.0..=MAX_SLOW_SECS).contains(&s) {
                    return Err(format!("slow takes 0 to {MAX_SLOW_SECS} seconds"));
                }
                Ok(Mode::Slow(s))
            }
            "bad-json" => {
                let a = arg.unwrap_or("syntax");
                BadJson::ALL
                    .into_iter()
                    .find(|k| k.name() == a)
                    .map(Mode::BadJson)
                    .ok_or_else(|| {
                        let names: Vec<&str> = BadJson::ALL.iter().map(|k| k.name()).collect();
                        format!("bad-json takes one of {} (got {a:?})", names.join(", "))
                    })
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

/// The terminal tricks every hostile string is made of: CSI and OSC sequences (clear
/// the screen, set the title, write the clipboard, ask the terminal to answer), a C1
/// CSI, bidi overrides and isolates, a zero-width space, CR, LF, TAB, BS, DEL. (NUL
/// comes only at the end: libvirt keeps agent strings as C strings and cuts them at the
/// first NUL, so a NUL early would shorten every string that goes through it.)
const PALETTE: &[&str] = &[
    "\u{1b}[2J\u{1b}[H",
    "\u{1b}]0;diq-hostile owns this title\u{7}",
    "\u{1b}]52;c;ZGlxLWhvc3RpbGU=\u{7}",
    "\u{1b}[31;1;5m",
    "\u{1b}[6n",
    "\u{9b}2J",
    "\u{202e}gnp.exe\u{202c}",
    "\u{2066}\u{2067}isolated\u{2069}",
    "\u{200b}",
    "\r",
    "\n",
    "\t",
    "\u{8}\u{8}",
    "\u{7f}",
    "\u{1b}[0m",
];

/// What every hostile string ends with: a NUL and a marker that only a client whose
/// transport keeps NULs sees (libvirt's does not: it cuts the string there).
pub const AFTER_NUL: &str = "\u{0}<after-nul>";

/// A string of about [`HOSTILE_LEN`] bytes for the field `field`: it starts with
/// `<field>` and the escape palette, then repeats the palette between filler, so a
/// tool that cuts it anywhere still holds escapes; it ends with [`AFTER_NUL`].
pub fn hostile(field: &str) -> String {
    let mut s = String::with_capacity(HOSTILE_LEN + 256);
    s.push('<');
    s.push_str(field);
    s.push('>');
    for p in PALETTE {
        s.push_str(p);
    }
    let mut i = 0;
    while s.len() < HOSTILE_LEN {
        s.push_str("diq-hostile ");
        s.push_str(PALETTE[i % PALETTE.len()]);
        i += 1;
    }
    s.push_str(AFTER_NUL);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_parse_and_print_back() {
        for line in [
            "honest",
            "escapes",
            "endless-read",
            "count-lies more",
            "count-lies less",
            "exec-never-exits",
            "many-mounts 7",
            "slow 4.5",
            "bad-json utf8",
            "bad-json not-object",
            "windows",
            "windows no-osinfo",
        ] {
            assert_eq!(Mode::parse(line).unwrap().to_string(), line);
        }
        assert_eq!(
            Mode::parse("count-lies").unwrap(),
            Mode::CountLies(Lie::More)
        );
        assert_eq!(
            Mode::parse("many-mounts").unwrap(),
            Mode::ManyMounts(DEFAULT_MANY_MOUNTS)
        );
        assert_eq!(
            Mode::parse(" bad-json ").unwrap(),
            Mode::BadJson(BadJson::Syntax)
        );
        assert!(Mode::parse("slow").is_err());
        assert!(Mode::parse("slow -1").is_err());
        assert!(Mode::parse("honest 1").is_err());
        assert!(Mode::parse("many-mounts 999999").is_err());
        assert!(Mode::parse("lies").is_err());
        assert!(Mode::parse("").is_err());
    }

    #[test]
    fn hostile_strings_are_big_and_full_of_escapes() {
        let h = hostile("pretty-name");
        assert!(h.len() >= HOSTILE_LEN && h.len() < HOSTILE_LEN + 256);
        assert!(h.starts_with("<pretty-name>\u{1b}[2J"));
        assert!(h.contains('\u{202e}') && h.contains('\n'));
        assert_eq!(h.find('\0'), Some(h.len() - AFTER_NUL.len()));
        assert!(h.as_bytes()[HOSTILE_LEN / 2..].contains(&0x1b));
    }
}
