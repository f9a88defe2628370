//! Which web origins may open a STOMP session (WebSocket or SockJS): the browser's guard
//! against cross-site WebSocket hijacking.
//!
//! The default is same-origin only, as Spring's: a page may connect when its `Origin` names
//! the host the request was sent to (its `Host` header), whatever the scheme. `--allowed-origins`
//! adds exact origins to that (`https://chat.example.com`), or `*` allows any. A request
//! without `Origin` is not a browser's and is allowed: the guard is for pages, and other
//! clients can send any header they like.

use std::fmt;

/// The origins allowed besides requests without `Origin`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// The request's own `Host` only (the default).
    #[default]
    SameOrigin,
    /// Same-origin, plus these exact origins (compared ignoring ASCII case).
    SameOriginAnd(Vec<String>),
    /// Any origin (`*`): only for development, or behind a proxy that checks.
    Any,
}

/// Why an origin was refused (logged, and the reason of the 403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginRefused {
    pub origin: String,
    pub host: String,
}

impl fmt::Display for OriginRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "origin {:?} is not this server's (Host {:?}) nor in --allowed-origins",
            self.origin, self.host
        )
    }
}

impl OriginPolicy {
    /// Parses `--allowed-origins`: `*`, or a comma-separated list of origins (empty entries
    /// ignored) added to same-origin.
    pub fn parse(value: &str) -> Result<OriginPolicy, String> {
        if value.trim() == "*" {
            return Ok(OriginPolicy::Any);
        }
        let list: Vec<String> = value
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if let Some(bad) = list.iter().find(|o| !o.contains("://")) {
            return Err(format!(
                "--allowed-origins wants origins like https://chat.example.com (or *), got {bad:?}"
            ));
        }
        Ok(match list.is_empty() {
            true => OriginPolicy::SameOrigin,
            false => OriginPolicy::SameOriginAnd(list),
        })
    }

    /// Judges a request's `Origin` against its `Host`.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefused> {
        let Some(origin) = origin else { return Ok(()) };
        let allowed = match self {
            OriginPolicy::Any => true,
            OriginPolicy::SameOrigin => same_host(origin, host),
            OriginPolicy::SameOriginAnd(list) => {
                same_host(origin, host) || list.iter().any(|a| a.eq_ignore_ascii_case(origin))
            }
        };
        match allowed {
            true => Ok(()),
            false => Err(OriginRefused {
                origin: origin.to_owned(),
                host: host.unwrap_or("").to_owned(),
            }),
        }
    }
}

impl fmt::Display for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginPolicy::SameOrigin => f.write_str("same origin"),
            OriginPolicy::SameOriginAnd(list) => write!(f, "same origin and {}", list.join(", ")),
            OriginPolicy::Any => f.write_str("any (*)"),
        }
    }
}

/// Does `origin` (`scheme://host[:port]`) name `host` (`host[:port]`)? A port the scheme
/// implies (80 for http, 443 for https) may be left out on either side.
fn same_host(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip = |a: &str| {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    !authority.is_empty() && strip(authority) == strip(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_the_request_host() {
        let p = OriginPolicy::default();
        assert!(p
            .check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"))
            .is_ok());
        assert!(p
            .check(
                Some("https://Chat.Example.com"),
                Some("chat.example.com:443")
            )
            .is_ok());
        assert!(p
            .check(Some("http://chat.example.com:80"), Some("chat.example.com"))
            .is_ok());
        assert!(
            p.check(None, Some("127.0.0.1:8080")).is_ok(),
            "no Origin: not a browser"
        );
        for (origin, host) in [
            ("http://evil.example", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:9090", Some("127.0.0.1:8080")),
            ("https://chat.example.com:8443", Some("chat.example.com")),
            ("null", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8080", None),
            ("file://", Some("")),
        ] {
            let refused = p.check(Some(origin), host).unwrap_err();
            assert_eq!(refused.origin, origin);
        }
    }

    #[test]
    fn allowed_origins_widen_same_origin() {
        let p = OriginPolicy::parse("https://a.example, https://b.example/").unwrap();
        assert!(p.check(Some("https://B.example"), Some("x")).is_ok());
        assert!(p.check(Some("http://x"), Some("x")).is_ok());
        assert!(p.check(Some("https://c.example"), Some("x")).is_err());
        assert_eq!(OriginPolicy::parse("*"), Ok(OriginPolicy::Any));
        assert_eq!(OriginPolicy::parse(""), Ok(OriginPolicy::SameOrigin));
        assert!(OriginPolicy::parse("a.example").is_err());
        assert!(OriginPolicy::Any.check(Some("http://evil"), None).is_ok());
    }
}
