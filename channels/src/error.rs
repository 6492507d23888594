//! The errors this crate hands to its callers.
//!
//! [`ChannelError`] is shaped for retry decisions: each variant says whether a second attempt
//! with the same idempotency key may help ([`ChannelError::is_retryable`]) and whether the
//! provider may already have acted ([`ChannelError::outcome_unknown`]), which is what tells the
//! order actor to leave an order `processing` for the janitor instead of failing it.
//!
//! No variant ever carries a request body, a card number or a secret.

/// Why a call to a payment channel produced no usable answer.
///
/// A decline is not an error: it is an `Ok` outcome of the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No answer within `request_timeout_ms`. The request may have reached the provider.
    #[error("the channel did not answer in time")]
    Timeout,
    /// The connection could not be opened, so the request never left this process.
    #[error("could not connect to the channel: {0}")]
    Connect(String),
    /// The provider said 429. `retry_after_ms` is its `Retry-After`, when it sent one.
    #[error("the channel is rate limiting us (retry after {retry_after_ms:?} ms)")]
    RateLimited {
        /// How long the provider asked us to wait.
        retry_after_ms: Option<u64>,
    },
    /// The provider answered 5xx (or another status it never should). It may have acted.
    #[error("the channel failed with status {status}")]
    Server {
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The provider refused the request (4xx other than 429). Sending it again cannot help.
    #[error("the channel rejected the request: {status} {code}")]
    Rejected {
        /// The HTTP status of the answer.
        status: u16,
        /// The provider's machine-readable error code (`key_blocked`, `invalid_card_number`, …),
        /// or `unknown` when its body had none.
        code: String,
    },
    /// The exchange broke after the request may have been sent (connection reset, truncated or
    /// unparseable answer). The provider may have acted.
    #[error("the channel's answer could not be read: {0}")]
    Unreadable(String),
    /// The adapter's in-flight bound (`inflight_max`) is reached; nothing was sent.
    #[error("too many calls to this channel are in flight")]
    Overloaded,
    /// Our own rate limit for this channel (or for this merchant on it) had no permit within
    /// `rate_wait_ms_max`; nothing was sent. The caller may try again after `retry_after_ms`.
    #[error("over the local rate limit for this channel (retry after {retry_after_ms} ms)")]
    RateLimitedLocally {
        /// When a permit is expected to be free again (an estimate, at least 1).
        retry_after_ms: u64,
    },
    /// The channel's circuit breaker is open (the channel is failing); nothing was sent. The
    /// caller may try again after `retry_after_ms`.
    #[error("the channel's circuit breaker is open (retry after {retry_after_ms} ms)")]
    CircuitOpen {
        /// When the breaker lets a probe through again (an estimate, at least 1).
        retry_after_ms: u64,
    },
}

impl ChannelError {
    /// Whether sending the same request again (same idempotency key) may succeed.
    ///
    /// [`ChannelError::RateLimitedLocally`] and [`ChannelError::CircuitOpen`] say `true` for the
    /// *caller*, later (after their `retry_after_ms`); the adapter itself never retries them,
    /// because they happen before its retry loop.
    ///
    /// Retrying is safe for every variant that says `true` because the provider deduplicates
    /// by idempotency key: a retry can never charge twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            ChannelError::Timeout
            | ChannelError::Connect(_)
            | ChannelError::RateLimited { .. }
            | ChannelError::Server { .. }
            | ChannelError::Unreadable(_)
            | ChannelError::RateLimitedLocally { .. }
            | ChannelError::CircuitOpen { .. } => true,
            ChannelError::Rejected { .. } | ChannelError::Overloaded => false,
        }
    }

    /// Whether the provider may have acted on the request even though we have no answer.
    ///
    /// When this is `true` the caller must not conclude that nothing happened: it leaves the
    /// payment uncertain and resolves it later by idempotency key.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ChannelError::Timeout | ChannelError::Server { .. } | ChannelError::Unreadable(_) => {
                true
            }
            ChannelError::Connect(_)
            | ChannelError::RateLimited { .. }
            | ChannelError::Rejected { .. }
            | ChannelError::Overloaded
            | ChannelError::RateLimitedLocally { .. }
            | ChannelError::CircuitOpen { .. } => false,
        }
    }
}

/// Why card details were refused before any call was made. Never contains the card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardDataError {
    /// The number is not 12 to 19 ASCII digits.
    #[error("the card number must be 12 to 19 digits")]
    InvalidNumber,
    /// The month is not 1–12 or the year is not four digits.
    #[error("the card expiry is invalid")]
    InvalidExpiry,
    /// The CVC is not 3 or 4 digits.
    #[error("the card security code must be 3 or 4 digits")]
    InvalidCvc,
}

/// Why a [`crate::adapter::ChannelAdapter`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterConfigError {
    /// The base URL is not an absolute `http://` or `https://` URL.
    #[error("invalid channel base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bound in [`crate::adapter::AdapterConfig`] is out of range.
    #[error("invalid adapter setting {name}: {reason}")]
    InvalidBound {
        /// The setting's name, as in the config struct.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::ChannelError;

    #[test]
    fn retry_and_uncertainty_classification() {
        let cases = [
            (ChannelError::Timeout, true, true),
            (ChannelError::Connect("refused".into()), true, false),
            (
                ChannelError::RateLimited {
                    retry_after_ms: Some(5),
                },
                true,
                false,
            ),
            (ChannelError::Server { status: 503 }, true, true),
            (
                ChannelError::Rejected {
                    status: 409,
                    code: "key_blocked".into(),
                },
                false,
                false,
            ),
            (ChannelError::Unreadable("truncated".into()), true, true),
            (ChannelError::Overloaded, false, false),
            (
                ChannelError::RateLimitedLocally { retry_after_ms: 3 },
                true,
                false,
            ),
            (ChannelError::CircuitOpen { retry_after_ms: 9 }, true, false),
        ];
        for (error, retryable, unknown) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
            assert_eq!(error.outcome_unknown(), unknown, "{error:?}");
        }
    }
}
