//! HTTP/1.1 responses, read incrementally: the head (httparse), then the body by
//! `Content-Length`, chunked, or up to the end of the connection, handed out as events.

/// What a response read so far brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The head: the status, and whether the connection stays open after the body.
    Head { status: u16, keep_alive: bool },
    /// Body bytes (chunk contents, without the chunked framing).
    Data(&'a [u8]),
    /// The end of one chunk of a chunked body.
    ChunkEnd,
    /// The end of the response.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailer,
    UntilClose,
}

/// Longest response head, chunk-size line or trailer line taken.
const MAX_LINE: usize = 64 << 10;

/// One connection's responses, one after the other.
#[derive(Debug)]
pub struct Responses {
    buf: Vec<u8>,
    state: State,
}

impl Default for Responses {
    fn default() -> Self {
        Responses {
            buf: Vec::new(),
            state: State::Head,
        }
    }
}

impl Responses {
    /// Takes `input`, handing `sink` what it completes. An error leaves the connection unusable.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(Event<'_>)) -> Result<(), String> {
        if self.state == State::UntilClose && self.buf.is_empty() {
            sink(Event::Data(input));
            return Ok(());
        }
        self.buf.extend_from_slice(input);
        let mut pos = 0;
        let result = self.parse(&mut pos, sink);
        self.buf.drain(..pos);
        result
    }

    fn parse(&mut self, pos: &mut usize, sink: &mut dyn FnMut(Event<'_>)) -> Result<(), String> {
        loop {
            let rest = &self.buf[*pos..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        return Ok(());
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(rest) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) if rest.len() > MAX_LINE => {
                            return Err("response head too long".into())
                        }
                        Ok(httparse::Status::Partial) => return Ok(()),
                        Err(e) => return Err(format!("bad response head: {e}")),
                    };
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(0);
                    let (mut chunked, mut length, mut close, mut keep) =
                        (false, None, false, false);
                    for h in resp.headers.iter() {
                        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.split(',').any(|t| t.trim() == "chunked");
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            length = Some(
                                value
                                    .trim()
                                    .parse::<u64>()
                                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
                            );
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close |= value.split(',').any(|t| t.trim() == "close");
                            keep |= value.split(',').any(|t| t.trim() == "keep-alive");
                        }
                    }
                    *pos += n;
                    if (100..200).contains(&status) {
                        continue; // 100 Continue and the like: the real head follows
                    }
                    let until_close = !chunked && length.is_none() && !matches!(status, 204 | 304);
                    let keep_alive = !close && !until_close && (version == 1 || keep);
                    sink(Event::Head { status, keep_alive });
                    self.state = if matches!(status, 204 | 304) {
                        State::Length(0)
                    } else if chunked {
                        State::ChunkSize
                    } else if let Some(n) = length {
                        State::Length(n)
                    } else {
                        State::UntilClose
                    };
                }
                State::Length(0) => {
                    self.state = State::Head;
                    sink(Event::End);
                }
                State::Length(n) | State::ChunkData(n) => {
                    if rest.is_empty() {
                        return Ok(());
                    }
                    let take = (n.min(rest.len() as u64)) as usize;
                    sink(Event::Data(&rest[..take]));
                    *pos += take;
                    let left = n - take as u64;
                    self.state = match self.state {
                        State::Length(_) => State::Length(left),
                        _ if left > 0 => State::ChunkData(left),
                        _ => {
                            sink(Event::ChunkEnd);
                            State::ChunkDataEnd
                        }
                    };
                }
                State::ChunkDataEnd => {
                    if rest.len() < 2 {
                        return Ok(());
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    *pos += 2;
                    self.state = State::ChunkSize;
                }
                State::ChunkSize | State::Trailer => {
                    let Some(at) = memchr::memmem::find(rest, b"\r\n") else {
                        if rest.len() > MAX_LINE {
                            return Err("chunk-size or trailer line too long".into());
                        }
                        return Ok(());
                    };
                    let line = &rest[..at];
                    *pos += at + 2;
                    if self.state == State::Trailer {
                        if line.is_empty() {
                            self.state = State::Head;
                            sink(Event::End);
                        }
                        continue;
                    }
                    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                    let hex = std::str::from_utf8(hex).unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| {
                        format!("bad chunk size {:?}", String::from_utf8_lossy(line))
                    })?;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::UntilClose => {
                    if !rest.is_empty() {
                        sink(Event::Data(rest));
                        *pos += rest.len();
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The connection ended: completes a body read up to the end (`Ok(true)`); `Ok(false)`
    /// between responses; an error in the middle of one.
    pub fn eof(&mut self, sink: &mut dyn FnMut(Event<'_>)) -> Result<bool, String> {
        match self.state {
            State::UntilClose => {
                self.state = State::Head;
                sink(Event::End);
                Ok(true)
            }
            State::Head if self.buf.is_empty() => Ok(false),
            _ => Err("connection closed in the middle of a response".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, then the end of the connection; returns the
    /// events as text, neighbouring data joined.
    fn events(input: &[u8], step: usize) -> Vec<String> {
        let mut r = Responses::default();
        let mut out: Vec<String> = Vec::new();
        let mut push = |e: Event<'_>| match (e, out.last_mut()) {
            (Event::Data(d), Some(last)) if last.starts_with("data ") => {
                last.push_str(&String::from_utf8_lossy(d))
            }
            (Event::Data(d), _) => out.push(format!("data {}", String::from_utf8_lossy(d))),
            (e, _) => out.push(format!("{e:?}")),
        };
        for piece in input.chunks(step) {
            r.feed(piece, &mut push).unwrap();
        }
        r.eof(&mut push).unwrap();
        out
    }

    #[test]
    fn chunked_length_and_empty_bodies_in_any_pieces() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nh\no\r\n4;x=y\r\na[1]\r\n0\r\nX-T: 1\r\n\r\n\
            HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n\
            HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad";
        let want = [
            "Head { status: 200, keep_alive: true }",
            "data h\no",
            "ChunkEnd",
            "data a[1]",
            "ChunkEnd",
            "End",
            "Head { status: 204, keep_alive: true }",
            "End",
            "Head { status: 500, keep_alive: false }",
            "data bad",
            "End",
        ];
        for step in [1, 2, 3, 7, input.len()] {
            let got = events(input, step);
            // Data may come in more pieces; `events` joins neighbours.
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn a_body_up_to_the_end_and_errors() {
        let got = events(b"HTTP/1.0 200 OK\r\n\r\nabc", 2);
        assert_eq!(
            got,
            ["Head { status: 200, keep_alive: false }", "data abc", "End"]
        );
        let mut r = Responses::default();
        let mut sink = |_: Event<'_>| {};
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", &mut sink)
            .unwrap();
        assert!(r.eof(&mut sink).is_err());
        let mut r = Responses::default();
        assert!(r
            .feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                &mut sink
            )
            .is_err());
        let mut r = Responses::default();
        assert!(r
            .feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
                &mut sink
            )
            .is_err());
    }
}
