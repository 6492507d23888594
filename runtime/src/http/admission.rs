//! Load shedding at the front door: at most `http.requests_inflight_max` merchant API requests
//! are handled at once. One past it is answered `503 overloaded` with `Retry-After` at once —
//! before its body is read, its signature checked or anything queued — so a burst beyond
//! capacity costs the admitted requests nothing and the refused ones a few microseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::http::error::ApiError;

/// Counts requests in progress; cheap to clone (one shared counter).
#[derive(Clone)]
pub struct Admission {
    inflight: Arc<AtomicUsize>,
    inflight_max: usize,
}

/// One admitted request; it leaves the count when dropped (answered, failed or abandoned).
pub struct Admitted {
    inflight: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(inflight_max: usize) -> Admission {
        Admission {
            inflight: Arc::new(AtomicUsize::new(0)),
            inflight_max: inflight_max.max(1),
        }
    }

    /// Admits one more request, or refuses it with `503 overloaded` when
    /// `requests_inflight_max` are already in progress.
    pub fn admit(&self) -> Result<Admitted, ApiError> {
        let admitted = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.inflight_max).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(Admitted {
                inflight: self.inflight.clone(),
            }),
            Err(_) => Err(ApiError::unavailable(
                "overloaded",
                "Kassa is handling as many requests as it can; retry shortly",
            )),
        }
    }

    /// Requests in progress now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_bound_and_admits_again_once_one_leaves() {
        let admission = Admission::new(2);
        let first = admission.admit().expect("first admitted");
        let _second = admission.admit().expect("second admitted");
        let refused = admission.admit().err().expect("third refused");
        assert_eq!(refused.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after_s, Some(1));
        assert_eq!(admission.inflight(), 2);
        drop(first);
        assert_eq!(admission.inflight(), 1);
        let _third = admission.admit().expect("admitted once one left");
    }
}
