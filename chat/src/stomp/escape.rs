//! Header escaping: which frames are escaped in which version, and the `\r \n \c \\` codec itself.

use std::borrow::Cow;

use super::encode::EncodeBuf;
use super::{Command, EncodeError, StompError, Version};

/// The header escaping rules in force for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escaping {
    /// Headers are raw octets: STOMP 1.0, an unknown (not yet negotiated)
    /// version, and `CONNECT`/`STOMP`/`CONNECTED` frames in every version.
    Raw,
    /// STOMP 1.1: `\n`, `\c`, `\\`.
    V1_1,
    /// STOMP 1.2: `\r`, `\n`, `\c`, `\\`.
    V1_2,
}

impl Escaping {
    pub(crate) fn for_frame(command: Command, version: Option<Version>) -> Escaping {
        if !command.escapes_headers() {
            return Escaping::Raw;
        }
        match version {
            None | Some(Version::V1_0) => Escaping::Raw,
            Some(Version::V1_1) => Escaping::V1_1,
            Some(Version::V1_2) => Escaping::V1_2,
        }
    }
}

/// Decodes escapes in a header name or value; borrows unless there was one.
pub(crate) fn unescape(s: &str, esc: Escaping) -> Result<Cow<'_, str>, StompError> {
    if esc == Escaping::Raw {
        return Ok(Cow::Borrowed(s));
    }
    let Some(first) = memchr::memchr(b'\\', s.as_bytes()) else {
        return Ok(Cow::Borrowed(s));
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut at = first;
    loop {
        out.push_str(&rest[..at]);
        let decoded = match (rest.as_bytes().get(at + 1), esc) {
            (Some(b'n'), _) => '\n',
            (Some(b'c'), _) => ':',
            (Some(b'\\'), _) => '\\',
            (Some(b'r'), Escaping::V1_2) => '\r',
            _ => return Err(StompError::InvalidEscape),
        };
        out.push(decoded);
        // Both octets of the escape are ASCII, so `at + 2` is a char boundary.
        rest = &rest[at + 2..];
        match memchr::memchr(b'\\', rest.as_bytes()) {
            Some(next) => at = next,
            None => {
                out.push_str(rest);
                return Ok(Cow::Owned(out));
            }
        }
    }
}

/// Checks that `s` can be written as a header name (`is_name`) or value under `esc`.
pub(crate) fn check_encodable(s: &str, esc: Escaping, is_name: bool) -> Result<(), EncodeError> {
    if is_name && s.is_empty() {
        return Err(EncodeError::EmptyHeaderName);
    }
    let bad = |b: u8| match b {
        0 => true,
        b'\n' => esc == Escaping::Raw,
        b'\r' => esc != Escaping::V1_2,
        b':' => is_name && esc == Escaping::Raw,
        _ => false,
    };
    if s.bytes().any(bad) {
        return Err(EncodeError::UnencodableHeader);
    }
    Ok(())
}

/// Writes `s` escaped per `esc`. The caller has run [`check_encodable`].
pub(crate) fn put_escaped<B: EncodeBuf + ?Sized>(s: &str, esc: Escaping, out: &mut B) {
    let bytes = s.as_bytes();
    if esc == Escaping::Raw {
        out.put(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b':' => b"\\c",
            b'\\' => b"\\\\",
            _ => continue,
        };
        out.put(&bytes[start..i]);
        out.put(rep);
        start = i + 1;
    }
    out.put(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str, esc: Escaping) -> String {
        check_encodable(s, esc, false).unwrap();
        let mut v = Vec::new();
        put_escaped(s, esc, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn frame_rules() {
        use Command::*;
        for v in [
            None,
            Some(Version::V1_0),
            Some(Version::V1_1),
            Some(Version::V1_2),
        ] {
            for c in [Connect, Stomp, Connected] {
                assert_eq!(Escaping::for_frame(c, v), Escaping::Raw);
            }
        }
        assert_eq!(Escaping::for_frame(Send, None), Escaping::Raw);
        assert_eq!(
            Escaping::for_frame(Send, Some(Version::V1_0)),
            Escaping::Raw
        );
        assert_eq!(
            Escaping::for_frame(Message, Some(Version::V1_1)),
            Escaping::V1_1
        );
        assert_eq!(
            Escaping::for_frame(Error, Some(Version::V1_2)),
            Escaping::V1_2
        );
    }

    #[test]
    fn unescape_borrows_when_clean() {
        assert!(matches!(
            unescape("a:b\\n", Escaping::Raw),
            Ok(Cow::Borrowed("a:b\\n"))
        ));
        assert!(matches!(
            unescape("plain", Escaping::V1_2),
            Ok(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn unescape_sequences() {
        assert_eq!(
            unescape("a\\nb\\cc\\\\d\\re", Escaping::V1_2).unwrap(),
            "a\nb:c\\d\re"
        );
        assert_eq!(unescape("\\\\n", Escaping::V1_2).unwrap(), "\\n");
        assert_eq!(unescape("\\n\\n", Escaping::V1_1).unwrap(), "\n\n");
        assert_eq!(unescape("é\\cü", Escaping::V1_2).unwrap(), "é:ü");
        for bad in ["\\", "a\\", "\\t", "\\C", "\\ ", "\\é", "ok\\\\\\"] {
            assert_eq!(
                unescape(bad, Escaping::V1_2),
                Err(StompError::InvalidEscape),
                "{bad:?}"
            );
        }
        assert_eq!(
            unescape("\\r", Escaping::V1_1),
            Err(StompError::InvalidEscape)
        );
    }

    #[test]
    fn escape_round_trips() {
        for s in [
            "",
            "x",
            "a:b",
            "line\nbreak",
            "back\\slash",
            "\\n",
            "ü:\\\n:",
        ] {
            for esc in [Escaping::V1_1, Escaping::V1_2] {
                let e = enc(s, esc);
                assert!(!e.contains(['\n', ':']), "{e:?}");
                assert_eq!(unescape(&e, esc).unwrap(), s);
            }
        }
        assert_eq!(enc("a\r:b", Escaping::V1_2), "a\\r\\cb");
    }

    #[test]
    fn encodability() {
        use Escaping::*;
        assert_eq!(
            check_encodable("", Raw, true),
            Err(EncodeError::EmptyHeaderName)
        );
        assert_eq!(check_encodable("", Raw, false), Ok(()));
        assert_eq!(check_encodable("a:b", Raw, false), Ok(()));
        assert_eq!(
            check_encodable("a:b", Raw, true),
            Err(EncodeError::UnencodableHeader)
        );
        assert_eq!(check_encodable("a:b", V1_1, true), Ok(()));
        assert_eq!(
            check_encodable("a\nb", Raw, false),
            Err(EncodeError::UnencodableHeader)
        );
        assert_eq!(check_encodable("a\nb", V1_1, false), Ok(()));
        assert_eq!(
            check_encodable("a\rb", V1_1, false),
            Err(EncodeError::UnencodableHeader)
        );
        assert_eq!(check_encodable("a\rb", V1_2, false), Ok(()));
        for esc in [Raw, V1_1, V1_2] {
            assert_eq!(
                check_encodable("a\0", esc, false),
                Err(EncodeError::UnencodableHeader)
            );
        }
    }
}
