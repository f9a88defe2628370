//! STOMP commands (the frame verbs of both directions) and protocol versions.

use std::fmt;

/// A STOMP frame command.
///
/// The parser accepts every command in both directions, so a client can parse
/// server frames and a broker can parse client frames with the same code;
/// whether a command is allowed from a given peer (or in a given version, see
/// [`Command::min_version`]) is the session's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (1.1+ alias of `CONNECT`).
    Stomp,
    /// Client: send a message to a destination.
    Send,
    /// Client: subscribe to a destination.
    Subscribe,
    /// Client: cancel a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: reject a message (1.1+).
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: roll back a transaction.
    Abort,
    /// Client: close the session.
    Disconnect,
    /// Server: session accepted.
    Connected,
    /// Server: a message delivered to a subscription.
    Message,
    /// Server: receipt for a client frame that asked for one.
    Receipt,
    /// Server: something went wrong; the connection is closed after it.
    Error,
}

impl Command {
    /// Every command, client commands first.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// Length in bytes of the longest command name (`UNSUBSCRIBE`).
    pub const MAX_LEN: usize = 11;

    /// The command for its exact (case-sensitive) wire name.
    pub fn from_bytes(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"CONNECTED" => Command::Connected,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Whether clients send this command.
    pub const fn is_client(self) -> bool {
        !self.is_server()
    }

    /// Whether servers send this command.
    pub const fn is_server(self) -> bool {
        matches!(
            self,
            Command::Connected | Command::Message | Command::Receipt | Command::Error
        )
    }

    /// Whether header escaping applies to this command's frames at all.
    ///
    /// STOMP 1.2 exempts `CONNECT` and `CONNECTED`; `STOMP` is `CONNECT` under
    /// another name and is exempt too.
    pub const fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }

    /// The first protocol version that defines this command.
    pub const fn min_version(self) -> Version {
        match self {
            Command::Stomp | Command::Nack => Version::V1_1,
            _ => Version::V1_0,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP protocol version. Ordered: `V1_0 < V1_1 < V1_2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping.
    V1_0,
    /// STOMP 1.1: `\n`, `\c` and `\\` escapes.
    V1_1,
    /// STOMP 1.2: adds the `\r` escape and CRLF line endings.
    V1_2,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` / `version` headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `"1.0"`, `"1.1"` or `"1.2"`.
    pub fn from_token(token: &str) -> Option<Version> {
        match token {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// Picks the highest version in both a `CONNECT` frame's `accept-version`
    /// header and `supported`.
    ///
    /// An absent header means the client speaks only 1.0. Unknown tokens are
    /// ignored; `None` means there is no common version (the server should
    /// answer with an `ERROR` frame).
    pub fn negotiate(accept_version: Option<&str>, supported: &[Version]) -> Option<Version> {
        match accept_version {
            None => supported.contains(&Version::V1_0).then_some(Version::V1_0),
            Some(list) => list
                .split(',')
                .filter_map(|t| Version::from_token(t.trim()))
                .filter(|v| supported.contains(v))
                .max(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Command::ALL {
            assert_eq!(Command::from_bytes(c.as_str().as_bytes()), Some(c));
            assert!(c.as_str().len() <= Command::MAX_LEN);
            assert_ne!(c.is_client(), c.is_server());
        }
        assert_eq!(
            Command::ALL.iter().map(|c| c.as_str().len()).max(),
            Some(Command::MAX_LEN)
        );
    }

    #[test]
    fn commands_are_case_sensitive_and_exact() {
        for bad in [
            &b"send"[..],
            b"Send",
            b"SEND ",
            b" SEND",
            b"",
            b"SENDX",
            b"GET",
        ] {
            assert_eq!(Command::from_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn escaping_exemptions() {
        let exempt: Vec<_> = Command::ALL
            .into_iter()
            .filter(|c| !c.escapes_headers())
            .collect();
        assert_eq!(
            exempt,
            [Command::Connect, Command::Stomp, Command::Connected]
        );
    }

    #[test]
    fn negotiation() {
        let all = &Version::ALL[..];
        assert_eq!(Version::negotiate(None, all), Some(Version::V1_0));
        assert_eq!(Version::negotiate(None, &[Version::V1_2]), None);
        assert_eq!(
            Version::negotiate(Some("1.0,1.1,1.2"), all),
            Some(Version::V1_2)
        );
        assert_eq!(
            Version::negotiate(Some("1.2, 1.0"), &[Version::V1_0, Version::V1_1]),
            Some(Version::V1_0)
        );
        assert_eq!(
            Version::negotiate(Some("2.0,1.1"), all),
            Some(Version::V1_1)
        );
        assert_eq!(Version::negotiate(Some(""), all), None);
        assert_eq!(Version::negotiate(Some("9"), all), None);
    }
}
