//! `ws://host:port/path?query` and `wss://` URLs, the subset a WebSocket client needs.

use std::fmt;

/// A parsed `ws://` or `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: TLS (feature `tls`).
    pub secure: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Only `ws://` is spoken, and `wss://` with feature `tls` (the event-loop client
    /// speaks `ws://` only).
    Scheme(String),
    MissingHost,
    BadPort(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(s) => {
                write!(
                    f,
                    "unsupported URL scheme {s:?} (ws://, and wss:// with feature `tls`)"
                )
            }
            UrlError::MissingHost => f.write_str("URL has no host"),
            UrlError::BadPort(p) => write!(f, "invalid port {p:?}"),
        }
    }
}

impl std::error::Error for UrlError {}

impl WsUrl {
    pub fn parse(url: &str) -> Result<WsUrl, UrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::Scheme(url.into()))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(UrlError::Scheme(scheme.into())),
        };
        let default_port = if secure { 443 } else { 80 };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        let target = target.split('#').next().unwrap_or("/").to_string();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') && h.ends_with(']') => {
                (
                    h,
                    p.parse::<u16>().map_err(|_| UrlError::BadPort(p.into()))?,
                )
            }
            _ => (authority, default_port),
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        Ok(WsUrl {
            secure,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            target,
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.secure { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let u = WsUrl::parse("ws://127.0.0.1:9001/runCase?case=1&agent=x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("127.0.0.1", 9001, "/runCase?case=1&agent=x")
        );
        let u = WsUrl::parse("ws://example.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 80, "/")
        );
        let u = WsUrl::parse("ws://[::1]:8080?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 8080, "/?x=1")
        );
        assert_eq!(u.host_header(), "[::1]:8080");
        assert!(!u.secure);
        let u = WsUrl::parse("wss://example.com/chat").unwrap();
        assert!(u.secure);
        assert_eq!((u.port, u.host_header().as_str()), (443, "example.com"));
        let u = WsUrl::parse("WSS://example.com:8443").unwrap();
        assert_eq!(u.host_header(), "example.com:8443");
    }

    #[test]
    fn rejects_what_it_cannot_speak() {
        assert_eq!(
            WsUrl::parse("https://x/"),
            Err(UrlError::Scheme("https".into()))
        );
        assert_eq!(
            WsUrl::parse("http//x"),
            Err(UrlError::Scheme("http//x".into()))
        );
        assert_eq!(WsUrl::parse("ws://:80/"), Err(UrlError::MissingHost));
        assert_eq!(
            WsUrl::parse("ws://x:99999/"),
            Err(UrlError::BadPort("99999".into()))
        );
    }
}
