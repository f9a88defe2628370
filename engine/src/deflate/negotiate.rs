//! Negotiating permessage-deflate (RFC 7692 §5, §7.1): the server picks the first offer it can
//! honour and answers it; the client writes its offer and checks the answer.

use std::fmt::Write as _;

use super::{DeflateConfig, Negotiated};

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// One offer, as the client wrote it. `client_max_window_bits`: `Some(None)` when it came
/// without a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<Option<u8>>,
}

/// An extension parameter: its name and its value, if any.
type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// Splits a `Sec-WebSocket-Extensions` value into extensions, each a name and its
/// parameters (names and values trimmed, values unquoted). Commas inside quoted strings are
/// not expected: no parameter of permessage-deflate needs one.
fn extensions(value: &[u8]) -> impl Iterator<Item = (&[u8], Vec<Param<'_>>)> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut items = e.split(|&b| b == b';').map(<[u8]>::trim_ascii);
            let name = items.next().unwrap_or_default();
            let params = items
                .map(|p| match p.iter().position(|&b| b == b'=') {
                    Some(i) => (p[..i].trim_ascii(), Some(unquote(p[i + 1..].trim_ascii()))),
                    None => (p, None),
                })
                .collect();
            (name, params)
        })
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// A window size parameter's value: 8–15, decimal, no leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Reads one offer's parameters; `None` when one is unknown, repeated or has a bad value
/// (§7: such an offer must be declined).
pub fn parse_offer(params: &[Param<'_>]) -> Option<Offer> {
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for &(name, value) in params {
        let index = PARAMS
            .iter()
            .position(|p| name.eq_ignore_ascii_case(p.as_bytes()))?;
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0, None) => offer.server_no_context_takeover = true,
            (1, None) => offer.client_no_context_takeover = true,
            (2, Some(v)) => offer.server_max_window_bits = Some(window_bits(v)?),
            (3, None) => offer.client_max_window_bits = Some(None),
            (3, Some(v)) => offer.client_max_window_bits = Some(Some(window_bits(v)?)),
            _ => return None,
        }
    }
    Some(offer)
}

const PARAMS: [&str; 4] = [
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
];

/// The server's choice: the first permessage-deflate offer in `values` (the request's
/// `Sec-WebSocket-Extensions` headers, in order) that it can honour under `config`, and the
/// parameters to answer with. Offers that are malformed, or that ask for a server window of 8
/// (zlib-style compressors cannot make one; answering with a larger value would break the
/// client), are declined, and the next one is tried.
pub fn accept<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    config: &DeflateConfig,
) -> Option<Negotiated> {
    for value in values {
        for (name, params) in extensions(value) {
            if !name.eq_ignore_ascii_case(NAME.as_bytes()) {
                continue;
            }
            let Some(offer) = parse_offer(&params) else {
                continue;
            };
            if let Some(n) = answer(&offer, config) {
                return Some(n);
            }
        }
    }
    None
}

/// The answer to one well-formed offer, or `None` to decline it.
pub fn answer(offer: &Offer, config: &DeflateConfig) -> Option<Negotiated> {
    if offer.server_max_window_bits == Some(8) {
        return None;
    }
    let server_window = config
        .server_max_window_bits
        .clamp(9, 15)
        .min(offer.server_max_window_bits.unwrap_or(15));
    // Offered: must be answered (with the same or a smaller value). Not offered: we may still
    // say how small our window is.
    let server_max_window_bits =
        (offer.server_max_window_bits.is_some() || server_window < 15).then_some(server_window);
    // Only when the client offered the parameter may we limit its window.
    let client_max_window_bits = offer.client_max_window_bits.and_then(|value| {
        let limit = value.unwrap_or(15);
        let ours = config.client_max_window_bits.clamp(8, 15).min(limit);
        (value.is_some() || ours < 15).then_some(ours)
    });
    Some(Negotiated {
        server_no_context_takeover: offer.server_no_context_takeover
            || config.server_no_context_takeover,
        // The client's hint is taken: saying it back lets us free its window between messages.
        client_no_context_takeover: offer.client_no_context_takeover
            || config.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

impl Negotiated {
    /// The `Sec-WebSocket-Extensions` value that states these parameters.
    pub fn header_value(&self) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(out, "; server_max_window_bits={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(out, "; client_max_window_bits={bits}");
        }
        out
    }
}

/// The client's offer for `config`: it always offers `client_max_window_bits` (so a server
/// may shrink our window, which costs us nothing), and asks for what `config` says.
pub fn offer(config: &DeflateConfig) -> String {
    let mut out = String::from(NAME);
    if config.client_no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    if config.server_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    let client_window = config.client_max_window_bits.clamp(9, 15);
    match client_window {
        15 => out.push_str("; client_max_window_bits"),
        bits => {
            let _ = write!(out, "; client_max_window_bits={bits}");
        }
    }
    let server_window = config.server_max_window_bits.clamp(9, 15);
    if server_window < 15 {
        let _ = write!(out, "; server_max_window_bits={server_window}");
    }
    out
}

/// Why a server's answer to our offer cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Not a single well-formed permessage-deflate with known parameters.
    Malformed,
    /// It did not confirm `server_no_context_takeover`, which we asked for.
    TakeoverRefused,
    /// A server window larger than we asked for.
    ServerWindowTooLarge,
    /// A client window of 8, which our compressor cannot make, or larger than we offered.
    ClientWindow,
}

/// Checks the server's answer (the response's `Sec-WebSocket-Extensions` values) to the offer
/// [`offer`] made for `config`. `Ok(None)`: the server declined.
pub fn check_answer<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    config: &DeflateConfig,
) -> Result<Option<Negotiated>, AnswerError> {
    let mut found = None;
    for value in values {
        for (name, params) in extensions(value) {
            if !name.eq_ignore_ascii_case(NAME.as_bytes()) || found.is_some() {
                return Err(AnswerError::Malformed);
            }
            found = Some(parse_offer(&params).ok_or(AnswerError::Malformed)?);
        }
    }
    let Some(answer) = found else {
        return Ok(None);
    };
    if config.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err(AnswerError::TakeoverRefused);
    }
    let asked = config.server_max_window_bits.clamp(9, 15);
    if answer.server_max_window_bits.is_some_and(|b| b > asked) {
        return Err(AnswerError::ServerWindowTooLarge);
    }
    let client_max_window_bits = match answer.client_max_window_bits {
        None => None,
        Some(None) => return Err(AnswerError::Malformed),
        Some(Some(bits)) if bits < 9 || bits > config.client_max_window_bits.clamp(9, 15) => {
            return Err(AnswerError::ClientWindow)
        }
        Some(bits) => bits,
    };
    Ok(Some(Negotiated {
        server_no_context_takeover: answer.server_no_context_takeover,
        // Offering the hint is a promise not to take over our own context.
        client_no_context_takeover: answer.client_no_context_takeover
            || config.client_no_context_takeover,
        server_max_window_bits: answer.server_max_window_bits,
        client_max_window_bits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(values: &[&str], config: &DeflateConfig) -> Option<String> {
        accept(values.iter().map(|v| v.as_bytes()), config).map(|n| n.header_value())
    }

    fn takeover() -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn server_answers() {
        let t = takeover();
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["permessage-deflate"], Some("permessage-deflate")),
            // Chrome's offer.
            (
                &["permessage-deflate; client_max_window_bits"],
                Some("permessage-deflate"),
            ),
            (
                &["permessage-deflate; server_no_context_takeover"],
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                &["permessage-deflate; server_max_window_bits=10"],
                Some("permessage-deflate; server_max_window_bits=10"),
            ),
            (
                &["permessage-deflate; server_max_window_bits=\"12\""],
                Some("permessage-deflate; server_max_window_bits=12"),
            ),
            (
                &["permessage-deflate; client_max_window_bits=9"],
                Some("permessage-deflate; client_max_window_bits=9"),
            ),
            // A window of 8 cannot be made: that offer is declined, the next one taken.
            (&["permessage-deflate; server_max_window_bits=8"], None),
            (
                &["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9"],
                Some("permessage-deflate; server_max_window_bits=9"),
            ),
            (
                &[
                    "permessage-deflate; server_max_window_bits=8",
                    "permessage-deflate",
                ],
                Some("permessage-deflate"),
            ),
            // Malformed offers are declined.
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits=09"], None),
            (&["permessage-deflate; client_max_window_bits=7"], None),
            (&["permessage-deflate; server_no_context_takeover=1"], None),
            (
                &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                None,
            ),
            (&["permessage-deflate; foo"], None),
            (&["x-webkit-deflate-frame", "foo, bar; baz=1"], None),
            (
                &["foo, permessage-deflate; client_no_context_takeover"],
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            (&[""], None),
        ];
        for (offers, want) in cases {
            assert_eq!(server(offers, &t).as_deref(), *want, "{offers:?}");
        }
    }

    #[test]
    fn server_policy_shapes_the_answer() {
        let config = DeflateConfig::default();
        assert_eq!(
            server(&["permessage-deflate; client_max_window_bits"], &config).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let small = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..takeover()
        };
        assert_eq!(
            server(&["permessage-deflate; client_max_window_bits"], &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11")
        );
        // Without client_max_window_bits in the offer the client's window cannot be limited.
        assert_eq!(
            server(&["permessage-deflate"], &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        assert_eq!(
            server(&["permessage-deflate; server_max_window_bits=9"], &small).as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
    }

    #[test]
    fn client_offer_and_answers() {
        let config = DeflateConfig::default();
        assert_eq!(
            offer(&config),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; client_max_window_bits"
        );
        let check = |v: &str, c: &DeflateConfig| check_answer([v.as_bytes()].into_iter(), c);
        let n = check(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
            &config,
        )
        .unwrap()
        .unwrap();
        assert!(n.client_no_context_takeover, "our hint binds us");
        assert_eq!(n.client_max_window_bits, Some(9));
        assert_eq!(
            check("permessage-deflate", &config),
            Err(AnswerError::TakeoverRefused)
        );
        let t = takeover();
        assert_eq!(check("", &t), Ok(None));
        assert!(check("permessage-deflate", &t).unwrap().is_some());
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; bogus",
            "permessage-deflate, permessage-deflate",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(check(bad, &t), Err(AnswerError::Malformed), "{bad}");
        }
        assert_eq!(
            check("permessage-deflate; client_max_window_bits=8", &t),
            Err(AnswerError::ClientWindow)
        );
        let small = DeflateConfig {
            server_max_window_bits: 10,
            ..takeover()
        };
        assert!(offer(&small).ends_with("; server_max_window_bits=10"));
        assert_eq!(
            check("permessage-deflate; server_max_window_bits=11", &small),
            Err(AnswerError::ServerWindowTooLarge)
        );
        assert!(check("permessage-deflate; server_max_window_bits=8", &small).is_ok());
    }
}
