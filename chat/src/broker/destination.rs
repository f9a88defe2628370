//! Destinations: which part of the broker a name belongs to, and subscription patterns.
//!
//! Segments are separated by `/` or `.` (so `/topic/rooms.42` has segments `topic`, `rooms`,
//! `42`). In a subscription pattern `*` matches exactly one segment and `**` any number of them
//! (including none): `/topic/rooms.*` matches `/topic/rooms.42`, `/topic/**` matches everything
//! under `/topic`.

/// Where a destination leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every subscriber gets every message.
    Topic,
    /// Each message goes to one subscriber.
    Queue,
    /// Routed to the application's handlers.
    App,
    /// `/user/...`: a per-user destination.
    User,
}

/// Prefixes, as in Spring's `enableSimpleBroker("/topic", "/queue")`,
/// `setApplicationDestinationPrefixes("/app")` and `setUserDestinationPrefix("/user")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefixes {
    pub topic: Vec<String>,
    pub queue: Vec<String>,
    pub app: Vec<String>,
    pub user: String,
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes {
            topic: vec!["/topic".into()],
            queue: vec!["/queue".into()],
            app: vec!["/app".into()],
            user: "/user".into(),
        }
    }
}

/// Does `name` start with `prefix` followed by a separator (or end)?
fn under(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '.']))
}

impl Prefixes {
    /// Classifies a destination, or `None` when no prefix claims it.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        if under(name, &self.user) {
            Some(Kind::User)
        } else if self.app.iter().any(|p| under(name, p)) {
            Some(Kind::App)
        } else if self.queue.iter().any(|p| under(name, p)) {
            Some(Kind::Queue)
        } else if self.topic.iter().any(|p| under(name, p)) {
            Some(Kind::Topic)
        } else {
            None
        }
    }

    /// `/user/queue/x` → `/queue/x` (what a subscriber to its own user destination means).
    pub fn strip_user<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.user.as_str())
            .filter(|rest| rest.starts_with('/'))
    }

    /// The application prefix of `name` stripped: `/app/chat.send` → `/chat.send`.
    pub fn strip_app<'a>(&self, name: &'a str) -> Option<&'a str> {
        self.app
            .iter()
            .find(|p| under(name, p))
            .map(|p| &name[p.len()..])
    }
}

fn segments(name: &str) -> impl Iterator<Item = &str> + Clone {
    name.split(['/', '.']).filter(|s| !s.is_empty())
}

/// True when `pattern` contains wildcards.
pub fn is_pattern(pattern: &str) -> bool {
    segments(pattern).any(|s| s == "*" || s == "**")
}

/// Does `name` match `pattern`?
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<&str> = segments(pattern).collect();
    let name: Vec<&str> = segments(name).collect();
    match_segments(&pattern, &name)
}

fn match_segments(pattern: &[&str], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((&"**", rest)) => (0..=name.len()).any(|skip| match_segments(rest, &name[skip..])),
        Some((&p, rest)) => match name.split_first() {
            Some((&n, name_rest)) => (p == "*" || p == n) && match_segments(rest, name_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_prefix() {
        let p = Prefixes::default();
        assert_eq!(p.kind("/topic/rooms.1"), Some(Kind::Topic));
        assert_eq!(p.kind("/queue/jobs"), Some(Kind::Queue));
        assert_eq!(p.kind("/app/chat.send"), Some(Kind::App));
        assert_eq!(p.kind("/user/queue/errors"), Some(Kind::User));
        assert_eq!(p.kind("/topical"), None);
        assert_eq!(p.kind("/elsewhere"), None);
        assert_eq!(p.strip_user("/user/queue/x"), Some("/queue/x"));
        assert_eq!(p.strip_app("/app/chat.send"), Some("/chat.send"));
    }

    #[test]
    fn wildcards() {
        assert!(matches("/topic/rooms.*", "/topic/rooms.42"));
        assert!(!matches("/topic/rooms.*", "/topic/rooms.42.x"));
        assert!(matches("/topic/**", "/topic/a/b.c"));
        assert!(matches("/topic/**", "/topic"));
        assert!(matches("/topic/*/end", "/topic/mid/end"));
        assert!(!matches("/topic/*/end", "/topic/end"));
        assert!(matches("/topic/**/end", "/topic/end"));
        assert!(matches("/topic/**/end", "/topic/a/b/end"));
        assert!(matches("/topic/x", "/topic/x"));
        assert!(!matches("/topic/x", "/topic/y"));
        assert!(is_pattern("/topic/*"));
        assert!(!is_pattern("/topic/x"));
    }
}
