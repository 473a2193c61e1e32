//! Why a hub refused: [`HubError`] for a subscription or a publish,
//! [`RecvError`] for a subscription that ended.

/// Why a subscription or a publish could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The topic name is empty, too long, or has a character outside
    /// `A-Z a-z 0-9 - _ . :`.
    #[error("invalid topic name {0:?}: 1-128 characters of A-Z a-z 0-9 - _ . :")]
    InvalidTopic(String),
    /// [`HubConfig::max_topics`](crate::hub::HubConfig::max_topics) topics already exist.
    #[error("too many topics (at most {0})")]
    TooManyTopics(usize),
    /// The client made [`HubConfig::max_topics_per_client`](crate::hub::HubConfig::max_topics_per_client) topics that
    /// still exist.
    #[error("too many topics made by this client (at most {0})")]
    TooManyTopicsForClient(usize),
    /// The message is over [`HubConfig::max_message_size`](crate::hub::HubConfig::max_message_size).
    #[error("a message is at most {0} bytes")]
    TooLarge(usize),
    /// The backplane cannot reach Redis: nothing was published or
    /// subscribed.
    #[error("the backplane (Redis) is unreachable")]
    Unavailable,
    /// Redis answered this one command with an error (out of memory, a
    /// script error): nothing was published or subscribed, and the
    /// connection stays up for the next.
    #[error("the backplane (Redis) refused: {0}")]
    Refused(String),
}

/// Why [`Subscription::recv`](crate::hub::Subscription::recv) returned no message.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber's queue overflowed and it was removed from the topic.
    #[error("slow consumer: the subscriber's queue of {0} messages overflowed")]
    Lagged(usize),
    /// Messages of the topic were lost for good (Redis lost them, or they
    /// were trimmed before this node could fetch them): the subscriber was
    /// removed from the topic, as a raw subscriber cannot be told which.
    #[error("messages of the topic were lost")]
    Lost,
    /// The hub is gone.
    #[error("the hub is closed")]
    Closed,
}
