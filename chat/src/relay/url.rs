//! The relay's URL: `stomp://LOGIN:PASSCODE@HOST:PORT/VHOST`.
//!
//! Login, passcode and vhost are percent-decoded (`%2F` is `/`). The port defaults to 61613;
//! an empty path or `/` is the vhost `/`, any other path is the vhost without its leading `/`
//! (`/prod` → `prod`). Login and passcode default to guest/guest. A query string may set the
//! pool size and the wildcard dialect: `?pool=8&dialect=rabbitmq|activemq|sockeye`.

use std::fmt;

use super::{Dialect, RelayConfig};

/// Why a relay URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not `stomp://...` (the scheme found is given).
    Scheme(String),
    /// No host.
    NoHost,
    /// The port is not a number from 1 to 65535.
    Port(String),
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded.
    Encoding(String),
    /// An unknown or bad query parameter.
    Parameter(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(s) => write!(f, "the relay URL must start with stomp:// (got {s:?})"),
            UrlError::NoHost => write!(f, "the relay URL has no host"),
            UrlError::Port(p) => write!(f, "bad port {p:?} in the relay URL"),
            UrlError::Encoding(s) => write!(f, "bad percent-encoding in the relay URL: {s:?}"),
            UrlError::Parameter(p) => write!(
                f,
                "bad parameter {p:?} in the relay URL (known: pool=N, dialect=rabbitmq|activemq|sockeye)"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UrlError::Encoding(s.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Encoding(s.to_owned()))
}

pub(super) fn parse(url: &str) -> Result<RelayConfig, UrlError> {
    let rest = url
        .strip_prefix("stomp://")
        .ok_or_else(|| UrlError::Scheme(url.split("://").next().unwrap_or("").to_owned()))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        // [v6]:port
        let (h, after) = inner.split_once(']').ok_or(UrlError::NoHost)?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let port = match port {
        None => 61613,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| UrlError::Port(p.to_owned()))?,
    };
    let mut config = RelayConfig::new(host, port);
    if let Some(userinfo) = userinfo {
        let (login, passcode) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        config.login = decode(login)?;
        config.passcode = decode(passcode)?;
    }
    config.vhost = match path {
        "" | "/" => "/".to_owned(),
        p => decode(&p[1..])?,
    };
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let bad = || UrlError::Parameter(pair.to_owned());
        let (key, value) = pair.split_once('=').ok_or_else(bad)?;
        match key {
            "pool" => {
                config.pool = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(bad)?
            }
            "dialect" => {
                config.dialect = match value {
                    "rabbitmq" => Dialect::RabbitMq,
                    "activemq" => Dialect::ActiveMq,
                    "sockeye" => Dialect::Sockeye,
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(config)
}

/// The URL again, passcode masked.
pub(super) fn display(config: &RelayConfig) -> String {
    let vhost = if config.vhost == "/" {
        String::new()
    } else {
        config.vhost.clone()
    };
    format!(
        "stomp://{}:***@{}:{}/{}",
        config.login, config.host, config.port, vhost
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_short_forms() {
        let c = parse("stomp://ann:s%40cret@broker.example:61614/prod?pool=8").unwrap();
        assert_eq!((c.login.as_str(), c.passcode.as_str()), ("ann", "s@cret"));
        assert_eq!((c.host.as_str(), c.port), ("broker.example", 61614));
        assert_eq!((c.vhost.as_str(), c.pool), ("prod", 8));
        assert_eq!(c.display_url(), "stomp://ann:***@broker.example:61614/prod");
        assert!(!format!("{c:?}").contains("s@cret"));

        let c = parse("stomp://127.0.0.1").unwrap();
        assert_eq!((c.port, c.vhost.as_str()), (61613, "/"));
        assert_eq!((c.login.as_str(), c.passcode.as_str()), ("guest", "guest"));
        assert_eq!(c.dialect, Dialect::RabbitMq);

        let c = parse("stomp://u:p@[::1]:1234/%2F?dialect=sockeye").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.vhost.as_str()),
            ("::1", 1234, "/")
        );
        assert_eq!(c.dialect, Dialect::Sockeye);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse("amqp://h").unwrap_err(),
            UrlError::Scheme("amqp".into())
        );
        assert_eq!(parse("stomp://:1/").unwrap_err(), UrlError::NoHost);
        assert_eq!(
            parse("stomp://h:0").unwrap_err(),
            UrlError::Port("0".into())
        );
        assert_eq!(
            parse("stomp://h:99999").unwrap_err(),
            UrlError::Port("99999".into())
        );
        assert!(matches!(
            parse("stomp://a:%zz@h").unwrap_err(),
            UrlError::Encoding(_)
        ));
        assert!(matches!(
            parse("stomp://h?pool=0").unwrap_err(),
            UrlError::Parameter(_)
        ));
        assert!(matches!(
            parse("stomp://h?colour=blue").unwrap_err(),
            UrlError::Parameter(_)
        ));
        // Messages say what is wrong.
        assert!(parse("http://h")
            .unwrap_err()
            .to_string()
            .contains("stomp://"));
    }
}
