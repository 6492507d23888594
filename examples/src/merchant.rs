//! [`MerchantClient`]: signs every request as one merchant (docs/API.md "Authentication").

use std::time::Duration;

use crate::http::{ClientError, HttpClient, Response};
use crate::sign::{sign_v1, unix_now};

/// A merchant's view of Kassa. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct MerchantClient {
    http: HttpClient,
    merchant_id: String,
    secret: String,
}

impl std::fmt::Debug for MerchantClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantClient")
            .field("base_url", &self.http.base_url())
            .field("merchant_id", &self.merchant_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl MerchantClient {
    pub fn new(base_url: &str, merchant_id: &str, secret: &str) -> Self {
        Self::with_http(HttpClient::new(base_url), merchant_id, secret)
    }

    /// A merchant client over an existing transport (sharing its pool).
    pub fn with_http(http: HttpClient, merchant_id: &str, secret: &str) -> Self {
        MerchantClient {
            http,
            merchant_id: merchant_id.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// The same merchant against another base URL (e.g. the server restarted on a new port).
    pub fn with_base_url(&self, base_url: &str) -> Self {
        MerchantClient {
            http: self.http.with_base_url(base_url),
            ..self.clone()
        }
    }

    /// The same merchant with another per-request timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        MerchantClient {
            http: self.http.with_timeout(timeout),
            ..self.clone()
        }
    }

    pub fn merchant_id(&self) -> &str {
        &self.merchant_id
    }

    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The unauthenticated transport underneath.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The authentication headers (and `Content-Type`) for a request signed at `timestamp`.
    /// Tests tamper with these to provoke `401`s.
    pub fn signed_headers(
        &self,
        timestamp: i64,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let signature = sign_v1(&self.secret, timestamp, method, path_and_query, body);
        vec![
            ("Kassa-Merchant".to_owned(), self.merchant_id.clone()),
            ("Kassa-Timestamp".to_owned(), timestamp.to_string()),
            ("Kassa-Signature".to_owned(), signature),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ]
    }

    /// A signed request, timestamped now, with `Idempotency-Key` when given.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        idempotency_key: Option<&str>,
    ) -> Result<Response, ClientError> {
        let body = body.unwrap_or_default();
        let mut headers = self.signed_headers(unix_now(), method, path_and_query, &body);
        if let Some(key) = idempotency_key {
            headers.push(("Idempotency-Key".to_owned(), key.to_owned()));
        }
        self.http.send(method, path_and_query, &headers, body).await
    }

    /// Exactly these headers and body, nothing signed or added: for tests of authentication.
    pub async fn send_raw(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        self.http.send(method, path_and_query, headers, body).await
    }

    /// A signed `POST` of `body` as JSON.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<Response, ClientError> {
        self.send(
            "POST",
            path,
            Some(body.to_string().into_bytes()),
            idempotency_key,
        )
        .await
    }

    /// A signed `GET`.
    pub async fn get(&self, path_and_query: &str) -> Result<Response, ClientError> {
        self.send("GET", path_and_query, None, None).await
    }
}
