//! Splits the host's byte stream into JSON values, as qemu-ga's streaming parser does:
//! values follow one another with or without whitespace or newlines between them, and a
//! 0xFF byte (which `guest-sync-delimited` clients send) throws away whatever was
//! half-read.

/// The most one request may take; more is thrown away (qemu-ga allows 64 MiB too).
const MAX_REQUEST: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct Splitter {
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// One complete value (the bytes of an object or array), or a stray byte outside any.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Value(Vec<u8>),
    /// Text outside any object that is not whitespace (qemu-ga answers it with a
    /// parse error too).
    Garbage(u8),
}

impl Splitter {
    pub fn reset(&mut self) {
        *self = Splitter::default();
    }

    pub fn feed(&mut self, data: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        for &b in data {
            if b == 0xFF {
                self.reset();
                continue;
            }
            if self.depth == 0 {
                match b {
                    b'{' | b'[' => {
                        self.buf.clear();
                        self.buf.push(b);
                        self.depth = 1;
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    other => out.push(Piece::Garbage(other)),
                }
                continue;
            }
            self.buf.push(b);
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            out.push(Piece::Value(std::mem::take(&mut self.buf)));
                        }
                    }
                    _ => {}
                }
            }
            if self.buf.len() > MAX_REQUEST {
                self.reset();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pieces: Vec<Piece>) -> Vec<String> {
        pieces
            .into_iter()
            .map(|p| match p {
                Piece::Value(v) => String::from_utf8(v).unwrap(),
                Piece::Garbage(b) => format!("garbage {}", b as char),
            })
            .collect()
    }

    #[test]
    fn splits_values_however_they_arrive() {
        let mut s = Splitter::default();
        let text =
            "{\"execute\":\"guest-sync\", \"arguments\":{\"id\":1}}\n{\"execute\":\"guest-ping\"}";
        let mut got = Vec::new();
        for chunk in text.as_bytes().chunks(5) {
            got.extend(values(s.feed(chunk)));
        }
        assert_eq!(
            got,
            [
                "{\"execute\":\"guest-sync\", \"arguments\":{\"id\":1}}",
                "{\"execute\":\"guest-ping\"}"
            ]
        );
    }

    #[test]
    fn braces_inside_strings_do_not_count() {
        let mut s = Splitter::default();
        let v = values(s.feed(br#"{"a":"}{\"}"}{"b":[1,{"c":"]"}]}"#));
        assert_eq!(v, [r#"{"a":"}{\"}"}"#, r#"{"b":[1,{"c":"]"}]}"#]);
    }

    #[test]
    fn ff_resets_and_garbage_is_reported() {
        let mut s = Splitter::default();
        assert!(s.feed(b"{\"execute\":\"gue").is_empty());
        let v = values(s.feed(b"\xff{\"execute\":\"guest-ping\"}x"));
        assert_eq!(v, ["{\"execute\":\"guest-ping\"}", "garbage x"]);
    }
}
