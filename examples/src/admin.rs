//! [`AdminClient`]: the operator's side (docs/API.md "Operators"), authenticated with
//! `Authorization: Bearer <admin token>`.

use crate::http::{ClientError, HttpClient, Response};
use crate::merchant::MerchantClient;

/// What `POST /admin/merchants` (and `kassa merchant create`) hand out, once.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantCredentials {
    pub id: String,
    pub secret: String,
    pub webhook_secret: String,
}

impl std::fmt::Debug for MerchantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantCredentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .finish()
    }
}

impl MerchantCredentials {
    /// Reads `id`, `secret` and `webhook_secret` from a merchant object; `operation` names
    /// where it came from, for the error.
    pub fn from_json(operation: &str, merchant: &serde_json::Value) -> Result<Self, ClientError> {
        let field = |name: &str| {
            merchant[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::MissingField {
                    operation: operation.to_owned(),
                    field: name.to_owned(),
                    // The object holds secrets: name the keys present, never the values.
                    body: match merchant.as_object() {
                        Some(object) => format!("keys {:?}", object.keys().collect::<Vec<_>>()),
                        None => "not a JSON object".to_owned(),
                    },
                })
        };
        Ok(MerchantCredentials {
            id: field("id")?,
            secret: field("secret")?,
            webhook_secret: field("webhook_secret")?,
        })
    }
}

/// An operator's client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct AdminClient {
    http: HttpClient,
    token: String,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base_url", &self.http.base_url())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AdminClient {
    pub fn new(base_url: &str, token: &str) -> Self {
        AdminClient {
            http: HttpClient::new(base_url),
            token: token.to_owned(),
        }
    }

    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The unauthenticated transport underneath (shares the pool).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// A request with the bearer token and, when there is a body, `Content-Type: application/json`.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let mut headers = vec![("Authorization".to_owned(), format!("Bearer {}", self.token))];
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        self.http
            .send(method, path_and_query, &headers, body.unwrap_or_default())
            .await
    }

    /// `POST /admin/merchants`; anything but `201` is [`ClientError::Status`].
    pub async fn create_merchant(
        &self,
        name: &str,
        webhook_url: Option<&str>,
    ) -> Result<MerchantCredentials, ClientError> {
        let mut body = serde_json::json!({ "name": name });
        if let Some(url) = webhook_url {
            body["webhook_url"] = serde_json::Value::from(url);
        }
        let operation = "POST /admin/merchants";
        let response = self
            .send(
                "POST",
                "/admin/merchants",
                Some(body.to_string().into_bytes()),
            )
            .await?;
        if response.status != 201 {
            return Err(ClientError::Status {
                operation: operation.to_owned(),
                status: response.status,
                body: response.text(),
            });
        }
        MerchantCredentials::from_json(operation, &response.json()?)
    }

    /// A client for `credentials`' merchant on the same server, sharing this client's pool.
    pub fn merchant(&self, credentials: &MerchantCredentials) -> MerchantClient {
        MerchantClient::with_http(self.http.clone(), &credentials.id, &credentials.secret)
    }
}
