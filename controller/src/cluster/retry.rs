//! Retries of one API call on answers that a later attempt can fix (409, 429, 5xx,
//! a dropped connection), with exponential backoff. Anything else fails at once.

use std::future::Future;
use std::time::Duration;

use super::error::{status_code, ClusterError};
use super::lease::Leadership;

/// The longest any single API call of the leader may take. Together with the lease's
/// renew deadline this bounds when a write can land: never after this replica's
/// leadership ends (a standby takes over only after the lease duration, 5 s later).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often and how patiently one call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Total attempts, the first included.
    pub attempts: u32,
}

impl Default for Backoff {
    /// 0.2 s, 0.4 s, 0.8 s, 1.6 s: about 3 s before a reconcile gives up and is re-queued.
    fn default() -> Self {
        Backoff {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            attempts: 5,
        }
    }
}

impl Backoff {
    /// The delay before attempt `n + 1` (n counts from 1).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Whether a failed call may succeed when repeated unchanged.
pub fn is_retryable(error: &kube::Error) -> bool {
    match status_code(error) {
        // Conflict (a concurrent writer or create race), throttling, server trouble.
        Some(code) => matches!(code, 409 | 429 | 500 | 502 | 503 | 504),
        // The request never got an answer: connection reset, timeout.
        None => matches!(
            error,
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
        ),
    }
}

/// A call of the leader, retried with backoff on answers a later attempt can fix
/// ([`is_retryable`]) and on timeouts. Each attempt starts only while this replica leads, and
/// is abandoned when its leadership (or [`CALL_TIMEOUT`]) runs out.
pub async fn leader_call<T, F, Fut>(
    what: &str,
    leadership: &Leadership,
    backoff: Backoff,
    mut call: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        let Some(remaining) = leadership.remaining() else {
            return Err(ClusterError::NotLeader);
        };
        let limit = remaining.min(CALL_TIMEOUT);
        let error = match tokio::time::timeout(limit, call()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if attempt < backoff.attempts && is_retryable(&error) => {
                ClusterError::kube(what.to_string(), error)
            }
            Ok(Err(error)) => return Err(ClusterError::kube(what.to_string(), error)),
            Err(_) if !leadership.is_leading() => return Err(ClusterError::NotLeader),
            Err(_) => {
                let timeout = ClusterError::Timeout {
                    action: what.to_string(),
                    after: limit,
                };
                if attempt >= backoff.attempts {
                    return Err(timeout);
                }
                timeout
            }
        };
        let delay = backoff.delay_after(attempt);
        tracing::warn!(%what, attempt, ?delay, %error, "retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let backoff = Backoff::default();
        let delays: Vec<_> = (1..=7)
            .map(|n| backoff.delay_after(n).as_millis())
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff.delay_after(200), Duration::from_secs(5));
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                ..Default::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn retries_only_what_can_get_better() {
        for code in [409, 429, 500, 502, 503, 504] {
            assert!(is_retryable(&api_error(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!is_retryable(&api_error(code)), "{code}");
        }
    }
}
