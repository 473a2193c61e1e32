//! The topic-name rule: which names a topic may have, so that a name is
//! safe in a URL path, a Redis key and a log line. A [`TopicName`] has
//! passed it: a request's topic is checked once where it comes in (the URL
//! of a WebSocket or a `POST`, a duplex.v1 frame, an application's call),
//! and what is below takes the checked name.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::HubError;

/// The longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 128;

/// A topic name that follows the rule: 1 to 128 characters of
/// `A-Z a-z 0-9 - _ . :`. Cheap to clone (reference-counted).
///
/// ```
/// use duplex_hub::TopicName;
/// let news: TopicName = "news".parse()?;
/// assert_eq!(&*news, "news");
/// assert!(TopicName::new("no spaces").is_err());
/// # Ok::<(), duplex_hub::HubError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Checks `name` against the rule.
    pub fn new(name: impl AsRef<str>) -> Result<TopicName, HubError> {
        let name = name.as_ref();
        check(name)?;
        Ok(TopicName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, shared.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

/// Whether `name` follows the rule (for the patterns of a token's claims,
/// which are names with a `.*` suffix).
pub(crate) fn check(name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_TOPIC_LEN).collect();
        Err(HubError::InvalidTopic(shown))
    }
}

impl Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for TopicName {
    type Err = HubError;

    fn from_str(name: &str) -> Result<TopicName, HubError> {
        TopicName::new(name)
    }
}

impl TryFrom<&str> for TopicName {
    type Error = HubError;

    fn try_from(name: &str) -> Result<TopicName, HubError> {
        TopicName::new(name)
    }
}

impl TryFrom<&String> for TopicName {
    type Error = HubError;

    fn try_from(name: &String) -> Result<TopicName, HubError> {
        TopicName::new(name)
    }
}

impl TryFrom<String> for TopicName {
    type Error = HubError;

    fn try_from(name: String) -> Result<TopicName, HubError> {
        TopicName::new(name)
    }
}

/// A name checked already: no second check.
impl TryFrom<&TopicName> for TopicName {
    type Error = HubError;

    fn try_from(name: &TopicName) -> Result<TopicName, HubError> {
        Ok(name.clone())
    }
}

/// Sound: the derived `Hash` and `Eq` are those of the `str`.
impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for TopicName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A name in a frame is checked as it is read: a frame with a bad one does
/// not parse.
impl<'de> serde::Deserialize<'de> for TopicName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TopicName::new(&*name).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for TopicName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for TopicName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_rule() {
        for good in [
            "a",
            "news",
            "chat.room-1",
            "user:42",
            "A_b",
            &"x".repeat(128),
        ] {
            let name = TopicName::new(good).unwrap();
            assert_eq!(name, good);
            assert_eq!(name.to_string(), good);
        }
        for bad in ["", "a b", "a/b", "é", "new\nline", "*", &"x".repeat(129)] {
            let err = TopicName::new(bad).unwrap_err();
            assert!(matches!(err, HubError::InvalidTopic(_)), "{bad:?}");
        }
        // What the error shows is bounded by the longest name.
        let HubError::InvalidTopic(shown) = TopicName::new("é".repeat(10_000)).unwrap_err() else {
            unreachable!()
        };
        assert_eq!(shown.chars().count(), MAX_TOPIC_LEN);
        // From a checked name, no check and the same shared string.
        let name = TopicName::new("news").unwrap();
        let again = TopicName::try_from(&name).unwrap();
        assert!(Arc::ptr_eq(name.as_arc(), again.as_arc()));
    }

    #[test]
    fn topic_names_are_checked_as_frames_are_read() {
        let name: TopicName = serde_json::from_str(r#""chat.1""#).unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""chat.1""#);
        let err = serde_json::from_str::<TopicName>(r#""a b""#).unwrap_err();
        assert!(err.to_string().contains("a b"), "{err}");
        let map: std::collections::HashMap<TopicName, u8> = [(name, 1)].into();
        assert_eq!(map.get("chat.1"), Some(&1));
    }
}
