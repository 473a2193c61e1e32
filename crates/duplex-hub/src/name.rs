//! The topic-name rule: which names a topic may have, so that a name is
//! safe in a URL path, a Redis key and a log line.

use crate::error::HubError;

/// The longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 128;

/// Checks a topic name: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`, so that
/// it is safe in a URL path, a Redis key and a log line.
pub fn validate_topic(name: &str) -> Result<(), HubError> {
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
