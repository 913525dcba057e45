//! Event type names and the patterns subscriptions use to select them.

use std::fmt;

use crate::InvalidValue;

const MAX_LEN: usize = 128;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_name_segment(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(is_name_byte)
}

/// The type of an event, e.g. `command.completed`. Case-sensitive, because
/// producers already publish names such as `WorkflowStateChange`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTypeName(String);

impl EventTypeName {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if (3..=MAX_LEN).contains(&s.len()) && s.split('.').all(is_name_segment) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue::new(
                "must be 3..128 characters: dot-separated, non-empty segments of A-Z, a-z, 0-9, '_' and '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventTypeName({:?})", self.0)
    }
}

/// An event type name in which whole segments may be `*`.
///
/// A `*` that is not the last segment matches exactly one segment; a `*` as
/// the last segment matches one or more, so `command.*` covers
/// `command.a.b` and `*` alone covers every event type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventPattern {
    // `raw` first so the derived ordering is the ordering of the text; the
    // other fields are computed from it and never disagree.
    raw: String,
    /// Byte length of the literal segments before the first `*`, without the
    /// trailing dot.
    prefix_len: usize,
    wildcard: bool,
}

impl EventPattern {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let segments_ok = s.split('.').all(|seg| seg == "*" || is_name_segment(seg));
        if !(1..=MAX_LEN).contains(&s.len()) || !segments_ok {
            return Err(InvalidValue::new(
                "must be 1..128 characters: dot-separated, non-empty segments of A-Z, a-z, 0-9, '_' and '-', where a whole segment may be '*'",
            ));
        }
        let first_star = if s == "*" || s.starts_with("*.") {
            Some(0)
        } else {
            s.find(".*.")
                .or_else(|| s.ends_with(".*").then(|| s.len() - 2))
        };
        Ok(Self {
            raw: s.to_owned(),
            prefix_len: first_star.unwrap_or(s.len()),
            wildcard: first_star.is_some(),
        })
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when the pattern contains a `*` segment, i.e. it is not one exact name.
    #[inline]
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The segments before the first `*`, joined with dots: `""` for `*`,
    /// `"a"` for `a.*.c`, the whole name for an exact pattern. Every event
    /// type the pattern matches starts with it, which lets an index narrow
    /// candidates before calling [`EventPattern::matches`].
    #[inline]
    pub fn literal_prefix(&self) -> &str {
        &self.raw[..self.prefix_len]
    }

    /// Whether `event_type` is selected by this pattern. Runs on every
    /// delivered event, hence no allocation. An empty segment in
    /// `event_type` never matches a `*`.
    #[inline]
    pub fn matches(&self, event_type: &str) -> bool {
        if !self.wildcard {
            return self.raw == event_type;
        }
        let mut events = event_type.split('.');
        let mut patterns = self.raw.split('.').peekable();
        while let Some(pattern) = patterns.next() {
            let Some(event) = events.next() else {
                return false;
            };
            if pattern == "*" {
                if event.is_empty() {
                    return false;
                }
                if patterns.peek().is_none() {
                    return events.all(|rest| !rest.is_empty());
                }
            } else if pattern != event {
                return false;
            }
        }
        events.next().is_none()
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventPattern({:?})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> EventPattern {
        EventPattern::parse(s).unwrap()
    }

    #[test]
    fn event_type_names_accepted() {
        for s in [
            "command.completed",
            "agent.presencechanged.v1",
            "WorkflowStateChange",
            "alarm-raised",
            "a_b",
            "a.b",
            &"x".repeat(128),
        ] {
            assert_eq!(EventTypeName::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn event_type_names_refused() {
        for s in [
            "",
            "ab",
            "a..b",
            ".ab",
            "ab.",
            "a b",
            "ab*",
            "a.*",
            "*",
            "é.ab",
            "ab/c",
            &"x".repeat(129),
        ] {
            assert!(EventTypeName::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn event_type_names_are_case_sensitive() {
        assert_ne!(
            EventTypeName::parse("Command.done").unwrap(),
            EventTypeName::parse("command.done").unwrap()
        );
    }

    #[test]
    fn event_type_name_formatting() {
        let name = EventTypeName::parse("a.b").unwrap();
        assert_eq!(name.to_string(), "a.b");
        assert_eq!(format!("{name:?}"), r#"EventTypeName("a.b")"#);
    }

    #[test]
    fn patterns_accepted() {
        for s in [
            "*",
            "a",
            "command.*",
            "*.completed",
            "a.*.c",
            "*.*",
            "A-b_1.*",
            &"x".repeat(128),
        ] {
            assert_eq!(pattern(s).as_str(), s);
        }
    }

    #[test]
    fn patterns_refused() {
        for s in [
            "",
            "agent*",
            "a*b",
            "a.b*",
            "**",
            "a..b",
            ".a",
            "a.",
            "*.",
            ".*",
            "a b",
            "a.?",
            &"x".repeat(129),
        ] {
            assert!(EventPattern::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn trailing_star_matches_one_or_more_segments() {
        let p = pattern("command.*");
        assert!(p.matches("command.completed"));
        assert!(p.matches("command.a.b"));
        assert!(!p.matches("command"));
        assert!(!p.matches("commands.x"));
        assert!(!p.matches("other.completed"));
        assert!(!p.matches("command."));
        assert!(!p.matches("command.a..b"));
    }

    #[test]
    fn inner_star_matches_exactly_one_segment() {
        let p = pattern("*.completed");
        assert!(p.matches("command.completed"));
        assert!(!p.matches("a.b.completed"));
        assert!(!p.matches("completed"));
        assert!(!p.matches(".completed"));

        let p = pattern("a.*.c");
        assert!(p.matches("a.x.c"));
        assert!(!p.matches("a.c"));
        assert!(!p.matches("a.x.y.c"));
        assert!(!p.matches("a.x.c.d"));
        assert!(!p.matches("b.x.c"));
    }

    #[test]
    fn consecutive_stars() {
        let p = pattern("a.*.*");
        assert!(p.matches("a.b.c"));
        assert!(p.matches("a.b.c.d"));
        assert!(!p.matches("a.b"));
    }

    #[test]
    fn lone_star_matches_everything() {
        let p = pattern("*");
        for s in ["a", "command.completed", "a.b.c.d", "WorkflowStateChange"] {
            assert!(p.matches(s), "{s}");
        }
        assert!(!p.matches(""));
    }

    #[test]
    fn exact_pattern_matches_only_itself() {
        let p = pattern("command.completed");
        assert!(p.matches("command.completed"));
        assert!(!p.matches("command.completed.v2"));
        assert!(!p.matches("command"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert!(!pattern("Command.*").matches("command.x"));
        assert!(pattern("Command.*").matches("Command.x"));
        assert!(!pattern("a.B").matches("a.b"));
    }

    #[test]
    fn wildcard_flag_and_literal_prefix() {
        let cases = [
            ("*", true, ""),
            ("*.completed", true, ""),
            ("command.*", true, "command"),
            ("a.*.c", true, "a"),
            ("a.b.*.d.*", true, "a.b"),
            ("command.completed", false, "command.completed"),
            ("a", false, "a"),
        ];
        for (s, wildcard, prefix) in cases {
            let p = pattern(s);
            assert_eq!(p.is_wildcard(), wildcard, "{s}");
            assert_eq!(p.literal_prefix(), prefix, "{s}");
        }
    }

    #[test]
    fn pattern_formatting() {
        let p = pattern("a.*");
        assert_eq!(p.to_string(), "a.*");
        assert_eq!(format!("{p:?}"), r#"EventPattern("a.*")"#);
    }
}
