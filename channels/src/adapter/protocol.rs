//! The wire protocols an adapter speaks, and how each one signs a request.
//!
//! | protocol       | body                                  | signature                                    | when signed |
//! |----------------|---------------------------------------|----------------------------------------------|-------------|
//! | `Card`         | JSON                                  | `Sandbox-Signature` header (`card::signature`) | each attempt |
//! | `QrWallet`     | `application/x-www-form-urlencoded`   | `timestamp`, `sign_type`, `sign` parameters (`qr_wallet::signature`) | once per call |
//! | `AppWallet`    | JSON                                  | `Wechatpay-*` headers (`app_wallet::signature`) | each attempt |
//! | `BankTransfer` | JSON                                  | `Bank-*` headers (`bank_transfer::signature`) | each attempt |
//!
//! A signature carried in headers is fresh on every attempt while the body stays byte-for-byte
//! the same. `qr_wallet` signs inside the body, so its body is signed once, before the first
//! attempt, and every retry resends those exact bytes (the signature's `timestamp` is then the
//! first attempt's; the provider accepts it for `signing::SIGNATURE_TOLERANCE_S`).
//!
//! Keys come from the one `api_secret` through [`crate::signing::derive_key`]; the card protocol
//! signs with `api_secret` itself.

use bytes::Bytes;
use hyper::header::HeaderValue;

use super::WireRequest;
use crate::app_wallet::signature as app_signature;
use crate::bank_transfer::signature as bank_signature;
use crate::card::signature as card_signature;
use crate::error::ChannelError;
use crate::qr_wallet::signature as qr_signature;
use crate::secret::Secret;
use crate::signing::{PURPOSE_SIGN, derive_key};

/// The wire protocol of a channel: how its requests are encoded and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The card acquirer: JSON, `Sandbox-Signature`.
    Card,
    /// The Alipay-style QR wallet: signed forms.
    QrWallet,
    /// The WeChat Pay v3-style app wallet: JSON, `Wechatpay-*` signature headers.
    AppWallet,
    /// The B2B bank transfer: JSON, `Bank-*` signature headers.
    BankTransfer,
}

impl Protocol {
    /// The channel's name, as in `POST /callbacks/{channel}` and the key derivation.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Card => "card",
            Protocol::QrWallet => "qr_wallet",
            Protocol::AppWallet => "app_wallet",
            Protocol::BankTransfer => "bank_transfer",
        }
    }
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

pub(crate) use crate::signing::SignedHeader;

/// Signs requests the way the adapter's protocol does.
pub(crate) struct Signer {
    protocol: Protocol,
    api_secret: Secret<String>,
    /// The protocol's derived signing key (unused by `Card`, which signs with the secret).
    sign_key: Secret<[u8; 32]>,
}

impl Signer {
    pub(crate) fn new(protocol: Protocol, api_secret: &Secret<String>) -> Self {
        let sign_key = derive_key(
            api_secret.expose().as_bytes(),
            protocol.name(),
            PURPOSE_SIGN,
        );
        Self {
            protocol,
            api_secret: api_secret.clone(),
            sign_key: Secret::new(sign_key),
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Once per call, before the first attempt: a protocol that signs inside the body signs
    /// here, so every attempt sends the same bytes.
    pub(crate) fn prepare(
        &self,
        request: WireRequest,
        now_s: u64,
    ) -> Result<WireRequest, ChannelError> {
        match self.protocol {
            Protocol::QrWallet => {
                let body = qr_signature::sign_form(self.sign_key.expose(), &request.body, now_s)
                    .map_err(|_| unsignable())?;
                Ok(WireRequest {
                    body: Bytes::from(body),
                    ..request
                })
            }
            Protocol::Card | Protocol::AppWallet | Protocol::BankTransfer => Ok(request),
        }
    }

    /// Each attempt: the content type and the protocol's signature headers, signed at `now_s`.
    pub(crate) fn headers(
        &self,
        request: &WireRequest,
        now_s: u64,
    ) -> Result<Vec<SignedHeader>, ChannelError> {
        let (method, path, body) = (request.method.as_str(), &request.path, &request.body);
        let key = self.sign_key.expose();
        let signed = match self.protocol {
            Protocol::Card => {
                let secret = self.api_secret.expose().as_bytes();
                let signature = card_signature::header_value(secret, now_s, method, path, body);
                HeaderValue::from_str(&signature)
                    .map(|value| vec![(card_signature::SIGNATURE_HEADER, value)])
            }
            Protocol::QrWallet => {
                return Ok(vec![("content-type", HeaderValue::from_static(FORM))]);
            }
            Protocol::AppWallet => app_signature::signed_headers(key, now_s, method, path, body),
            Protocol::BankTransfer => {
                bank_signature::signed_headers(key, now_s, method, path, body)
            }
        };
        let mut headers = vec![("content-type", HeaderValue::from_static(JSON))];
        headers.extend(signed.map_err(|_| unsignable())?);
        Ok(headers)
    }
}

/// The signature could not be built (an unprintable header, a malformed form): nothing was
/// sent, so the call is refused without a retry.
fn unsignable() -> ChannelError {
    ChannelError::Rejected {
        status: 400,
        code: String::from("unsignable_request"),
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderName;
    use hyper::{HeaderMap, Method};

    use super::*;

    fn request(body: &'static str) -> WireRequest {
        WireRequest {
            method: Method::POST,
            path: "/x/v1/y".into(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn header_map(headers: Vec<SignedHeader>) -> HeaderMap {
        headers
            .into_iter()
            .map(|(name, value)| {
                // `from_bytes` lower-cases the name, as the HTTP builder does.
                let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
                (name, value)
            })
            .collect()
    }

    #[test]
    fn a_form_is_signed_once_and_verifies_at_the_provider() {
        let secret = Secret::new(String::from("s3cret"));
        let signer = Signer::new(Protocol::QrWallet, &secret);
        let prepared = signer
            .prepare(request("out_trade_no=k1&total_amount_minor=5"), 1_000)
            .expect("signable");
        let key = qr_signature::signing_key(b"s3cret");
        let params = qr_signature::verify_form(&key, &prepared.body, 1_000).expect("verifies");
        assert_eq!(params["out_trade_no"], "k1");
        // Each attempt sends the prepared bytes; only the content type is added.
        let headers = header_map(signer.headers(&prepared, 1_005).expect("headers"));
        assert_eq!(headers["content-type"], FORM);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn header_protocols_sign_each_attempt_afresh_over_the_same_body() {
        let secret = Secret::new(String::from("s3cret"));
        let app = Signer::new(Protocol::AppWallet, &secret);
        let body = request("{\"a\":1}");
        let prepared = app.prepare(request("{\"a\":1}"), 1_000).expect("unchanged");
        assert_eq!(prepared.body, body.body);
        let first = header_map(app.headers(&prepared, 1_000).expect("headers"));
        let second = header_map(app.headers(&prepared, 1_000).expect("headers"));
        assert_ne!(
            first["wechatpay-nonce"], second["wechatpay-nonce"],
            "a fresh nonce per attempt"
        );
        let key = app_signature::signing_key(b"s3cret");
        for headers in [&first, &second] {
            assert_eq!(
                app_signature::verify(&key, headers, "POST", "/x/v1/y", &body.body, 1_000),
                Ok(())
            );
        }
        let bank = Signer::new(Protocol::BankTransfer, &secret);
        let headers = header_map(bank.headers(&prepared, 2_000).expect("headers"));
        let key = bank_signature::signing_key(b"s3cret");
        assert_eq!(
            bank_signature::verify(&key, &headers, "POST", "/x/v1/y", &body.body, 2_000),
            Ok(())
        );
        let card = header_map(
            Signer::new(Protocol::Card, &secret)
                .headers(&prepared, 3_000)
                .expect("headers"),
        );
        let card_header = card["sandbox-signature"].to_str().expect("ASCII");
        assert_eq!(
            card_signature::verify(
                b"s3cret",
                Some(card_header),
                "POST",
                "/x/v1/y",
                &body.body,
                3_000
            ),
            Ok(())
        );
    }
}
