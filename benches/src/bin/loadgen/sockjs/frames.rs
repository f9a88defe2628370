//! SockJS frames as an `xhr_streaming` body carries them, one a line (`o`, `h`, `a[...]`,
//! `c[...]`, after a prelude of 2,048 `h`), and the JSON array of an `a` frame.

/// Splits a body into lines, across the pieces it arrives in.
#[derive(Debug, Default)]
pub struct Lines {
    carry: Vec<u8>,
}

impl Lines {
    /// Hands `each` every line `data` completes (without its `\n`); returns whether a line
    /// is left incomplete at the end of `data`.
    pub fn feed(&mut self, mut data: &[u8], each: &mut dyn FnMut(&[u8])) -> bool {
        while let Some(at) = memchr::memchr(b'\n', data) {
            if self.carry.is_empty() {
                each(&data[..at]);
            } else {
                self.carry.extend_from_slice(&data[..at]);
                each(&self.carry);
                self.carry.clear();
            }
            data = &data[at + 1..];
        }
        self.carry.extend_from_slice(data);
        !self.carry.is_empty()
    }

    /// Part of a line is waiting for the rest.
    pub fn pending(&self) -> bool {
        !self.carry.is_empty()
    }

    pub fn clear(&mut self) {
        self.carry.clear();
    }
}

/// Hands `each` the strings of the JSON array `input` (`["a","b\"c"]`; what follows the `a`
/// of a frame); `scratch` holds a string that had escapes. Returns how many there were.
pub fn strings(
    input: &[u8],
    scratch: &mut String,
    each: &mut dyn FnMut(&str),
) -> Result<usize, String> {
    let mut p = Parser { input, at: 0 };
    p.expect(b'[')?;
    let mut count = 0;
    if p.peek() == Some(b']') {
        p.at += 1;
    } else {
        loop {
            p.expect(b'"')?;
            let start = p.at;
            let Some(n) = memchr::memchr2(b'"', b'\\', &input[start..]) else {
                return Err("unterminated string".into());
            };
            p.at += n;
            if input[p.at] == b'"' {
                let s = std::str::from_utf8(&input[start..p.at])
                    .map_err(|_| "a string is not UTF-8".to_string())?;
                p.at += 1;
                check_controls(s.as_bytes())?;
                each(s);
            } else {
                scratch.clear();
                check_controls(&input[start..p.at])?;
                scratch.push_str(
                    std::str::from_utf8(&input[start..p.at])
                        .map_err(|_| "a string is not UTF-8".to_string())?,
                );
                p.escaped(scratch)?;
                each(scratch);
            }
            count += 1;
            match p.next() {
                Some(b',') => {}
                Some(b']') => break,
                _ => return Err("expected , or ] after a string".into()),
            }
        }
    }
    p.skip_ws();
    if p.at != input.len() {
        return Err("bytes after the array".into());
    }
    Ok(count)
}

/// JSON strings hold no raw control characters.
fn check_controls(raw: &[u8]) -> Result<(), String> {
    if raw.iter().any(|&b| b < 0x20) {
        return Err("a control character unescaped in a string".into());
    }
    Ok(())
}

struct Parser<'a> {
    input: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self
            .input
            .get(self.at)
            .is_some_and(|b| b" \t\r\n".contains(b))
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.input.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.next() {
            Some(b) if b == want => Ok(()),
            Some(b) => Err(format!(
                "expected {:?}, found {:?}",
                want as char, b as char
            )),
            None => Err(format!("expected {:?}, found the end", want as char)),
        }
    }

    /// The rest of a string from its first backslash, decoded into `out`, up to and past its
    /// closing quote.
    fn escaped(&mut self, out: &mut String) -> Result<(), String> {
        loop {
            let rest = &self.input[self.at..];
            let n = memchr::memchr2(b'"', b'\\', rest).ok_or("unterminated string")?;
            check_controls(&rest[..n])?;
            out.push_str(std::str::from_utf8(&rest[..n]).map_err(|_| "a string is not UTF-8")?);
            self.at += n + 1;
            if rest[n] == b'"' {
                return Ok(());
            }
            let c = *self.input.get(self.at).ok_or("unterminated escape")?;
            self.at += 1;
            match c {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4()?;
                    let code = if (0xd800..0xdc00).contains(&hi)
                        && self.input[self.at..].starts_with(b"\\u")
                    {
                        self.at += 2;
                        let lo = self.hex4()?;
                        if !(0xdc00..0xe000).contains(&lo) {
                            return Err("a lone high surrogate".into());
                        }
                        0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                    } else {
                        hi
                    };
                    // A lone surrogate is kept as U+FFFD (it is not a char).
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                c => return Err(format!("bad escape \\{}", c as char)),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let hex = self
            .input
            .get(self.at..self.at + 4)
            .ok_or("short \\u escape")?;
        self.at += 4;
        u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16)
            .map_err(|_| "bad \\u escape".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut scratch = String::new();
        let n = strings(input.as_bytes(), &mut scratch, &mut |s| {
            out.push(s.to_string())
        })?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(all("[]").unwrap(), Vec::<String>::new());
        assert_eq!(all("[\"a\",\"bc\"]").unwrap(), ["a", "bc"]);
        assert_eq!(all(" [ \"a\" , \"b\" ] ").unwrap(), ["a", "b"]);
        assert_eq!(
            all(r#"["x\"y\\z\/\n","\u00e9\u2028\ud83d\ude00"]"#).unwrap(),
            ["x\"y\\z/\n", "é\u{2028}😀"]
        );
        for bad in [
            "",
            "[",
            "[\"a\"",
            "[\"a\",]",
            "[a]",
            "[\"a\"]x",
            "[\"\\q\"]",
            "[\"a\nb\"]",
        ] {
            assert!(all(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lines_across_pieces() {
        let body = b"hhhh\no\nh\na[\"x\"]\nc[3000,\"Go away!\"]\n";
        for step in 1..body.len() {
            let mut lines = Lines::default();
            let mut got = Vec::new();
            for piece in body.chunks(step) {
                lines.feed(piece, &mut |l| {
                    got.push(String::from_utf8_lossy(l).into_owned())
                });
            }
            assert!(!lines.pending());
            assert_eq!(
                got,
                ["hhhh", "o", "h", "a[\"x\"]", "c[3000,\"Go away!\"]"],
                "{step}"
            );
        }
        let mut lines = Lines::default();
        assert!(lines.feed(b"o\na[", &mut |_| {}));
        assert!(lines.pending());
        lines.clear();
        assert!(!lines.pending());
    }
}
