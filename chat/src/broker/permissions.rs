//! Who may SEND to and SUBSCRIBE to what: an ordered list of rules from the config file, the
//! first that applies deciding; when none applies, the frame is allowed (the broker's other
//! rules, such as the application-only topics, still hold).
//!
//! A rule names a user (or `*` for everyone, anonymous sessions included), a command (`SEND`,
//! `SUBSCRIBE`, or `*`), a destination pattern (`*` one segment, `**` any number, as in
//! subscriptions) and `allow` or `deny`. A SUBSCRIBE to a pattern is judged conservatively: a
//! deny rule applies to it when either pattern's literal part (before its first wildcard) begins
//! the other's, since such a subscription may receive what the rule denies.

use serde::Deserialize;

use super::destination;

/// The command a rule is about.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Verb {
    #[serde(rename = "SEND")]
    Send,
    #[serde(rename = "SUBSCRIBE")]
    Subscribe,
    #[serde(rename = "*")]
    Any,
}

/// What a rule decides.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Allow,
    Deny,
}

/// One rule, as written in the config file's `"permissions"` list:
/// `{"user": "*", "command": "SEND", "destination": "/topic/announce.**", "access": "deny"}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub user: String,
    pub command: Verb,
    pub destination: String,
    pub access: Access,
}

impl Rule {
    fn applies(&self, user: Option<&str>, verb: Verb, destination: &str) -> bool {
        let who = self.user == "*" || user == Some(self.user.as_str());
        let what = self.command == Verb::Any || self.command == verb;
        who && what && self.covers(destination)
    }

    /// Does the rule's pattern reach `destination` (itself maybe a subscription pattern)?
    fn covers(&self, destination: &str) -> bool {
        if destination::matches(&self.destination, destination) {
            return true;
        }
        if self.access == Access::Deny && destination::is_pattern(destination) {
            let (a, b) = (literal(&self.destination), literal(destination));
            return a.starts_with(b) || b.starts_with(a);
        }
        false
    }
}

/// A pattern up to its first wildcard.
fn literal(pattern: &str) -> &str {
    pattern.find('*').map_or(pattern, |i| &pattern[..i])
}

/// The rules, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub rules: Vec<Rule>,
}

/// A frame the rules refuse: the ERROR's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub verb: Verb,
    pub destination: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.verb {
            Verb::Send => "SEND to",
            Verb::Subscribe | Verb::Any => "SUBSCRIBE to",
        };
        write!(f, "permission denied: {verb} {}", self.destination)
    }
}

impl Permissions {
    pub fn new(rules: Vec<Rule>) -> Self {
        Permissions { rules }
    }

    /// Checks a SEND or SUBSCRIBE (`verb`) of `user` to `destination`.
    pub fn check(&self, user: Option<&str>, verb: Verb, destination: &str) -> Result<(), Denied> {
        let first = self
            .rules
            .iter()
            .find(|r| r.applies(user, verb, destination));
        match first.map(|r| r.access) {
            Some(Access::Deny) => Err(Denied {
                verb,
                destination: destination.to_owned(),
            }),
            Some(Access::Allow) | None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Permissions {
        Permissions::new(serde_json::from_str(json).expect("rules"))
    }

    #[test]
    fn the_first_rule_that_applies_decides() {
        let p = rules(
            r#"[
            {"user": "admin", "command": "SEND", "destination": "/topic/announce.**", "access": "allow"},
            {"user": "*", "command": "SEND", "destination": "/topic/announce.**", "access": "deny"},
            {"user": "*", "command": "*", "destination": "/queue/secret", "access": "deny"}
        ]"#,
        );
        assert!(p
            .check(Some("admin"), Verb::Send, "/topic/announce.all")
            .is_ok());
        let denied = p
            .check(Some("ann"), Verb::Send, "/topic/announce.all")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: SEND to /topic/announce.all"
        );
        assert!(
            p.check(None, Verb::Send, "/topic/announce.x").is_err(),
            "anonymous too"
        );
        assert!(p
            .check(Some("ann"), Verb::Subscribe, "/topic/announce.all")
            .is_ok());
        assert!(p
            .check(Some("ann"), Verb::Subscribe, "/queue/secret")
            .is_err());
        assert!(
            p.check(Some("ann"), Verb::Send, "/topic/other").is_ok(),
            "no rule: allowed"
        );
    }

    #[test]
    fn a_subscription_pattern_that_may_reach_a_denied_destination_is_denied() {
        let p = rules(
            r#"[{"user": "*", "command": "SUBSCRIBE", "destination": "/topic/admin.**", "access": "deny"}]"#,
        );
        for denied in ["/topic/**", "/topic/admin.*", "/topic/admin.x"] {
            assert!(
                p.check(Some("ann"), Verb::Subscribe, denied).is_err(),
                "{denied}"
            );
        }
        for allowed in ["/topic/rooms.*", "/topic/adminx", "/queue/**"] {
            assert!(
                p.check(Some("ann"), Verb::Subscribe, allowed).is_ok(),
                "{allowed}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_commands_are_refused() {
        for bad in [
            r#"[{"user": "*", "command": "ACK", "destination": "/q", "access": "deny"}]"#,
            r#"[{"user": "*", "command": "SEND", "destination": "/q", "access": "maybe"}]"#,
            r#"[{"user": "*", "command": "SEND", "dest": "/q", "access": "deny"}]"#,
        ] {
            assert!(serde_json::from_str::<Vec<Rule>>(bad).is_err(), "{bad}");
        }
    }
}
