//! How large a message Redis can carry to every node: from its pub/sub
//! output buffer limit, read at start.

use crate::backplane::payload::PAYLOAD_HEADER;

/// What Redis assumes when `CONFIG GET` is refused (managed Redis renames
/// it): its default pub/sub output buffer hard limit, 32 MiB.
const DEFAULT_PUBSUB_HARD_LIMIT: usize = 32 << 20;

/// The largest message the backplane may carry, from Redis's
/// `client-output-buffer-limit` for pub/sub clients: Redis drops a
/// subscriber connection whose output buffer passes the hard limit, and
/// with it every message on its way to that node. A message takes room
/// twice there when a node reads it while the next is written, so the
/// limit is half the hard limit (16 MiB by Redis's default of 32 MiB), less
/// the payload's header; without a hard limit, the soft one bounds it the
/// same way; with neither, nothing does.
pub(crate) fn pubsub_limit(config: Option<&str>) -> usize {
    let mut hard = DEFAULT_PUBSUB_HARD_LIMIT;
    if let Some(config) = config {
        let words: Vec<&str> = config.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("pubsub"))
            && let (Some(h), Some(soft)) = (words.get(at + 1), words.get(at + 2))
        {
            let (h, soft) = (size_of_config(h), size_of_config(soft));
            hard = match (h, soft) {
                (Some(0), Some(0)) => return usize::MAX,
                (Some(0), Some(soft)) => soft,
                (Some(h), _) => h,
                _ => DEFAULT_PUBSUB_HARD_LIMIT,
            };
        }
    }
    (hard / 2).saturating_sub(PAYLOAD_HEADER)
}

/// A size in Redis's configuration: bytes, or with `kb`, `mb`, `gb` (or
/// `k`, `m`, `g`, powers of ten).
fn size_of_config(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: usize = digits.parse().ok()?;
    let scale = match &lower[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_message_is_half_of_redis_pubsub_hard_limit() {
        let redis_default = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(
            pubsub_limit(Some(redis_default)),
            (16 << 20) - PAYLOAD_HEADER
        );
        assert_eq!(
            pubsub_limit(None),
            (16 << 20) - PAYLOAD_HEADER,
            "CONFIG refused"
        );
        assert_eq!(
            pubsub_limit(Some("pubsub 1mb 256kb 60")),
            (512 << 10) - PAYLOAD_HEADER
        );
        assert_eq!(
            pubsub_limit(Some("pubsub 0 8mb 60")),
            (4 << 20) - PAYLOAD_HEADER,
            "only a soft limit"
        );
        assert_eq!(pubsub_limit(Some("pubsub 0 0 0")), usize::MAX, "no limit");
        assert_eq!(size_of_config("64m"), Some(64_000_000));
        assert_eq!(size_of_config("2GB"), Some(2 << 30));
        assert_eq!(size_of_config("lots"), None);
    }
}
