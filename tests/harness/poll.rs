//! Waiting for a condition with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// First pause between probes; it doubles up to [`POLL_INTERVAL_MAX`].
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(10);
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(200);

/// Calls `probe` until it returns `Ok`, pausing briefly between calls; panics if `timeout`
/// passes first, naming `what` and the last `Err` the probe gave (what it saw instead).
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = POLL_INTERVAL_MIN;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(POLL_INTERVAL_MAX);
    }
}

/// Runs `work` to its end, or panics once `timeout` has passed: a test that would hang fails
/// instead, saying how long it was given.
pub async fn within<T>(timeout: Duration, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, work).await {
        Ok(value) => value,
        Err(_) => panic!("the test did not finish within {timeout:?}"),
    }
}
