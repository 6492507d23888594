//! Kassa's merchant request signature (DESIGN.md §4, docs/API.md "Authentication").

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{method}.{path_and_query}.{body}")>`.
///
/// `method` and `path_and_query` must be exactly what goes on the wire (`POST`,
/// `/v1/payments?limit=5`); `body` is the raw body bytes (empty for a GET).
pub fn sign_v1(
    secret: &str,
    timestamp: i64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(format!("{timestamp}.{method}.{path_and_query}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The current unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_reference_hmac() {
        // Reference: printf '1700000000.POST./v1/payments.{}' |
        //   openssl dgst -sha256 -hmac sk_test
        let signature = sign_v1("sk_test", 1_700_000_000, "POST", "/v1/payments", b"{}");
        assert_eq!(
            signature, "v1=8d89f77cd8b5066b44abdad9b6960044feb828857b456390edb0d7b6c651a3af",
            "signature of a fixed input changed"
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let base = sign_v1("s", 1, "GET", "/v1/payments", b"");
        assert_ne!(base, sign_v1("t", 1, "GET", "/v1/payments", b""));
        assert_ne!(base, sign_v1("s", 2, "GET", "/v1/payments", b""));
        assert_ne!(base, sign_v1("s", 1, "POST", "/v1/payments", b""));
        assert_ne!(base, sign_v1("s", 1, "GET", "/v1/payments?limit=1", b""));
        assert_ne!(base, sign_v1("s", 1, "GET", "/v1/payments", b"x"));
    }
}
