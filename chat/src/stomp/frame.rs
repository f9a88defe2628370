//! The parsed frame types: [`Frame`], [`Header`] and the parser's [`Status`].

use std::borrow::Cow;

use super::Command;

/// One header as it appeared on the wire, escapes already decoded.
///
/// Name and value borrow from the input unless an escape had to be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header name (case-sensitive).
    pub name: Cow<'a, str>,
    /// The header value: everything after the first colon of the line.
    pub value: Cow<'a, str>,
}

impl<'a> Header<'a> {
    /// A header from two strings.
    pub fn new(name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A STOMP frame borrowing from the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The command.
    pub command: Command,
    /// Every header in wire order, repeats included. Use [`Frame::header`] to
    /// look one up: STOMP says the first occurrence wins.
    pub headers: Vec<Header<'a>>,
    /// The body, without the terminating NUL.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Self {
        Frame {
            command,
            headers: Vec::new(),
            body: &[],
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &*h.value)
    }

    /// Every value of headers called `name`, in wire order (the first is the
    /// one in force, the rest are history).
    pub fn header_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| &*h.value)
    }

    /// The first `content-length` header as a number; `None` if absent or not
    /// a plain decimal (the parser rejects the latter, so for parsed frames
    /// `None` means absent).
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| parse_content_length(v).ok())
    }
}

/// The outcome of one successful [`parse`](super::parse) call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole frame, and how many bytes of the buffer it used (through its
    /// NUL; EOLs after it are reported by the next call as heart-beats).
    Complete(T, usize),
    /// The buffer starts with one heart-beat EOL (`\n`, or `\r\n`): consume
    /// this many bytes, note the peer is alive, and call again.
    HeartBeat(usize),
    /// Everything so far is valid but the frame is not complete: read more,
    /// append, and call again with the whole buffer.
    Partial,
}

impl<T> Status<T> {
    /// Whether this is [`Status::Partial`].
    pub fn is_partial(&self) -> bool {
        matches!(self, Status::Partial)
    }
}

/// Parses a `content-length` value: ASCII digits only, no sign or spaces,
/// must fit in `usize`.
pub(crate) fn parse_content_length(v: &str) -> Result<usize, ()> {
    if v.is_empty() {
        return Err(());
    }
    v.bytes().try_fold(0usize, |n, b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(b - b'0')))
                .ok_or(())
        } else {
            Err(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_header_wins() {
        let mut f = Frame::new(Command::Send);
        f.headers.push(Header::new("a", "1"));
        f.headers.push(Header::new("b", "2"));
        f.headers.push(Header::new("a", String::from("3")));
        assert_eq!(f.header("a"), Some("1"));
        assert_eq!(f.header("b"), Some("2"));
        assert_eq!(f.header("A"), None);
        assert_eq!(f.header_all("a").collect::<Vec<_>>(), ["1", "3"]);
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length("0"), Ok(0));
        assert_eq!(parse_content_length("0012"), Ok(12));
        assert_eq!(
            parse_content_length(&usize::MAX.to_string()),
            Ok(usize::MAX)
        );
        for bad in ["", " 1", "1 ", "+1", "-1", "1.0", "0x10", "١"] {
            assert_eq!(parse_content_length(bad), Err(()), "{bad:?}");
        }
        let too_big = format!("{}0", usize::MAX);
        assert_eq!(parse_content_length(&too_big), Err(()));

        let mut f = Frame::new(Command::Send);
        assert_eq!(f.content_length(), None);
        f.headers.push(Header::new("content-length", "5"));
        f.headers.push(Header::new("content-length", "7"));
        assert_eq!(f.content_length(), Some(5));
    }
}
