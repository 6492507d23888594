//! HTTPS (docs/API.md "HTTPS"): `kassa dev-cert` writes a self-signed pair, `kassa serve` with
//! `KASSA_HTTP_TLS_CERT_PATH` / `KASSA_HTTP_TLS_KEY_PATH` serves HTTP/1.1 and HTTP/2 over TLS
//! as ALPN negotiates, only to clients that trust the certificate, and never answers plain HTTP
//! as if it were HTTPS; webhooks go to `https://` endpoints whose certificate Kassa verifies,
//! trusting a private CA through `KASSA_TLS_EXTRA_CA_PATH`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::tls::{ALPN_H2, ALPN_HTTP1, HttpsClient, HttpsResponse, client_config, tls_connect};
use harness::webhooks::{Reply, WebhookReceiver, always};
use harness::*;
use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a webhook may take to arrive (the first attempt is due at once).
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// How long the plain-HTTP probe of the TLS port may take to end.
const PLAIN_PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a failed delivery to an untrusted endpoint may take to show.
const UNTRUSTED_WAIT: Duration = Duration::from_secs(30);

/// A certificate pair written by `kassa dev-cert`.
struct DevCert {
    cert: PathBuf,
    key: PathBuf,
}

/// Runs `kassa dev-cert --out <dir>/<name>` and checks what it wrote and printed.
async fn dev_cert(dir: &Path, name: &str) -> DevCert {
    let out = dir.join(name);
    let out_arg = out.to_str().expect("temp paths are UTF-8");
    let run = run_cli(&["dev-cert", "--out", out_arg, "--host", "kassa.test"], &[]).await;
    run.assert_success();
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    for (variable, path) in [
        ("KASSA_HTTP_TLS_CERT_PATH", &cert),
        ("KASSA_HTTP_TLS_KEY_PATH", &key),
    ] {
        let path = std::fs::canonicalize(path).expect("dev-cert wrote the file");
        let line = format!("{variable}={}", path.display());
        assert!(
            run.stdout.contains(&line),
            "no `{line}` in:\n{}",
            run.stdout
        );
    }
    let key_text = std::fs::read_to_string(&key).expect("reading key.pem");
    assert!(key_text.contains("PRIVATE KEY"), "key.pem holds no key");
    assert!(
        !run.stdout.contains(key_text.trim()) && !run.stderr.contains("PRIVATE KEY"),
        "dev-cert printed the private key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key.pem")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key.pem mode {mode:o}");
    }
    DevCert { cert, key }
}

/// Starts Kassa serving TLS with `cert`, plus `env`.
async fn start_tls(cert: &DevCert, env: &[(&str, &Path)]) -> Kassa {
    let mut options = KassaOptions::new()
        .env("KASSA_HTTP_TLS_CERT_PATH", cert.cert.display())
        .env("KASSA_HTTP_TLS_KEY_PATH", cert.key.display());
    for (key, value) in env {
        options = options.env(key, value.display());
    }
    let kassa = Kassa::start(options).await;
    assert!(
        kassa.base_url().starts_with("https://127.0.0.1:"),
        "the start-up line names https: {}",
        kassa.base_url()
    );
    kassa
}

/// Creates a merchant over HTTPS (`POST /admin/merchants`).
async fn create_merchant(
    kassa: &Kassa,
    https: &HttpsClient,
    name: &str,
    webhook_url: Option<&str>,
) -> MerchantCredentials {
    let mut body = serde_json::json!({ "name": name });
    if let Some(url) = webhook_url {
        body["webhook_url"] = url.into();
    }
    let headers = vec![
        (
            "Authorization".to_owned(),
            format!("Bearer {}", kassa.admin_token()),
        ),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let created = https
        .send(
            "POST",
            "/admin/merchants",
            &headers,
            body.to_string().into_bytes(),
        )
        .await
        .expect("POST /admin/merchants over HTTPS");
    let merchant = expect_status(&created.response, 201, "POST /admin/merchants");
    MerchantCredentials::from_json("POST /admin/merchants", &merchant).expect("credentials")
}

/// A signed request as `merchant`, with `Idempotency-Key` when given.
async fn signed(
    https: &HttpsClient,
    merchant: &MerchantCredentials,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    key: Option<&str>,
) -> HttpsResponse {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    // Only for its signing: this client never sends anything itself.
    let signer = MerchantClient::new("https://unused.invalid", &merchant.id, &merchant.secret);
    let mut headers = signer.signed_headers(unix_now(), method, path, &body);
    if let Some(key) = key {
        headers.push(("Idempotency-Key".to_owned(), key.to_owned()));
    }
    https
        .send(method, path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} over HTTPS: {e}"))
}

/// A successful card charge over `https`; checks the negotiated protocol and the payment.
async fn charge(
    https: &HttpsClient,
    merchant: &MerchantCredentials,
    alpn: &[u8],
    version: Version,
) -> serde_json::Value {
    let body = usd_charge(CARD_SUCCEEDS);
    let key = unique("tls-charge");
    let answer = signed(
        https,
        merchant,
        "POST",
        "/v1/payments",
        Some(&body),
        Some(&key),
    )
    .await;
    assert_eq!(answer.alpn.as_deref(), Some(alpn), "negotiated ALPN");
    assert_eq!(answer.version, version, "response version");
    let payment = expect_status(&answer.response, 201, "a charge over TLS");
    assert_payment_shape(&payment);
    assert_no_card_data(&answer.response, CARD_SUCCEEDS);
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["amount"], "10.00", "{payment}");
    assert_eq!(payment["currency"], "USD", "{payment}");
    assert_eq!(payment["card"]["last4"], "4242", "{payment}");
    assert_eq!(payment["merchant_order_id"], body["merchant_order_id"]);
    payment
}

#[tokio::test]
async fn serves_http1_and_http2_over_tls_only_to_clients_that_trust_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let server = dev_cert(dir.path(), "server").await;
    let stranger = dev_cert(dir.path(), "stranger").await;
    let kassa = start_tls(&server, &[]).await;

    let http1 = HttpsClient::new(
        kassa.base_url(),
        client_config(Some(&server.cert), &[ALPN_HTTP1]),
    );
    let http2 = HttpsClient::new(
        kassa.base_url(),
        client_config(Some(&server.cert), &[ALPN_H2, ALPN_HTTP1]),
    );
    let merchant = create_merchant(&kassa, &http1, "TLS Ltd", None).await;

    // A signed charge over HTTP/1.1, another over HTTP/2, each read back over the other.
    let over_http1 = charge(&http1, &merchant, ALPN_HTTP1, Version::HTTP_11).await;
    let over_http2 = charge(&http2, &merchant, ALPN_H2, Version::HTTP_2).await;
    for (payment, client, version) in [
        (&over_http1, &http2, Version::HTTP_2),
        (&over_http2, &http1, Version::HTTP_11),
    ] {
        let path = format!("/v1/payments/{}", id_of(payment));
        let read = signed(client, &merchant, "GET", &path, None, None).await;
        assert_eq!(read.version, version);
        let stored = expect_status(&read.response, 200, "GET the payment over TLS");
        assert_eq!(stored["id"], payment["id"]);
        assert_eq!(stored["status"], "succeeded");
    }
    // The same router behind both: a list over HTTP/2, and a bad signature is still a 401.
    let list = signed(&http2, &merchant, "GET", "/v1/payments", None, None).await;
    let (payments, _) = assert_list(&expect_status(&list.response, 200, "the list over h2"));
    assert_eq!(payments.len(), 2, "both charges are listed");
    let signer = MerchantClient::new("https://unused.invalid", &merchant.id, "wrong-secret");
    let headers = signer.signed_headers(unix_now(), "GET", "/v1/payments", b"");
    let forged = http2
        .send("GET", "/v1/payments", &headers, Vec::new())
        .await
        .expect("GET over HTTP/2");
    assert_error(&forged.response, 401, "invalid_signature");

    // A client that does not trust the certificate fails the handshake.
    let authority = kassa.base_url().trim_start_matches("https://").to_owned();
    for config in [
        client_config(Some(&stranger.cert), &[ALPN_H2, ALPN_HTTP1]),
        client_config(None, &[ALPN_HTTP1]),
    ] {
        match tls_connect(&authority, config).await {
            Ok(_) => panic!("a client that does not trust the certificate got through"),
            Err(error) => assert!(
                error.contains("certificate") || error.contains("UnknownIssuer"),
                "{error}"
            ),
        }
    }

    // Plain HTTP to the TLS port gets no HTTP answer (at most a TLS alert) and is closed.
    let answer = within(PLAIN_PROBE_TIMEOUT, async {
        let mut stream = TcpStream::connect(&authority).await.expect("connecting");
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("writing plain HTTP");
        let mut answer = Vec::new();
        // A reset is as good as a close here.
        let _ = stream.read_to_end(&mut answer).await;
        answer
    })
    .await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP on the TLS port was answered in plain HTTP: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // The server is none the worse for the failed handshakes.
    let health = http2
        .send("GET", "/healthz", &[], Vec::new())
        .await
        .expect("GET /healthz over HTTP/2");
    assert_eq!(health.response.status, 200, "{}", health.response.text());
}

/// A TLS endpoint in front of a plain `WebhookReceiver`: terminates TLS with `cert` and copies
/// bytes both ways. Counts the handshakes that failed (a client that did not trust it).
struct TlsFront {
    addr: SocketAddr,
    failed_handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    async fn start(cert: &DevCert, backend: &WebhookReceiver) -> TlsFront {
        let backend: SocketAddr = backend
            .url()
            .trim_start_matches("http://")
            .trim_end_matches("/webhooks")
            .parse()
            .expect("the receiver's address");
        let acceptor = tokio_rustls::TlsAcceptor::from(harness::tls::server_config(
            &cert.cert,
            &cert.key,
            &[ALPN_HTTP1],
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("an address");
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let failed = failed_handshakes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, failed) = (acceptor.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            addr,
            failed_handshakes,
            task,
        }
    }
}

#[tokio::test]
async fn webhooks_reach_an_https_endpoint_trusted_through_the_extra_ca() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let server = dev_cert(dir.path(), "server").await;
    let receiver_cert = dev_cert(dir.path(), "receiver").await;
    let untrusted_cert = dev_cert(dir.path(), "untrusted").await;
    let receiver = WebhookReceiver::start(always(Reply::Status(200))).await;
    let front = TlsFront::start(&receiver_cert, &receiver).await;
    let untrusted_receiver = WebhookReceiver::start(always(Reply::Status(200))).await;
    let untrusted_front = TlsFront::start(&untrusted_cert, &untrusted_receiver).await;
    let kassa = start_tls(
        &server,
        &[("KASSA_TLS_EXTRA_CA_PATH", receiver_cert.cert.as_path())],
    )
    .await;
    let https = HttpsClient::new(
        kassa.base_url(),
        client_config(Some(&server.cert), &[ALPN_H2, ALPN_HTTP1]),
    );

    // Trusted through the extra CA: the event arrives, signed.
    let url = format!("https://127.0.0.1:{}/webhooks", front.addr.port());
    let merchant = create_merchant(&kassa, &https, "Hooks over TLS", Some(&url)).await;
    let payment = charge(&https, &merchant, ALPN_H2, Version::HTTP_2).await;
    let payment_id = id_of(&payment);
    let delivered = poll_until("the payment's webhook over HTTPS", DELIVERY_WAIT, || {
        let received = receiver.received();
        let payment_id = payment_id.clone();
        async move {
            received
                .into_iter()
                .find(|r| {
                    serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|event| {
                        event["type"] == "payment.succeeded"
                            && event["data"]["object"]["id"] == payment_id.as_str()
                    })
                })
                .ok_or_else(|| "no payment.succeeded yet".to_owned())
        }
    })
    .await;
    let header = delivered
        .signature
        .clone()
        .expect("a Kassa-Signature header");
    kassa_client::verify_webhook(
        &merchant.webhook_secret,
        &header,
        &delivered.body,
        unix_now(),
        300,
    )
    .expect("the webhook's signature verifies");
    assert_eq!(front.failed_handshakes.load(Ordering::SeqCst), 0);

    // An endpoint whose certificate nothing vouches for is never sent the event.
    let url = format!("https://localhost:{}/webhooks", untrusted_front.addr.port());
    let other = create_merchant(&kassa, &https, "Untrusted hooks", Some(&url)).await;
    charge(&https, &other, ALPN_H2, Version::HTTP_2).await;
    poll_until(
        "a refused handshake at the untrusted endpoint",
        UNTRUSTED_WAIT,
        || {
            let failed = untrusted_front.failed_handshakes.load(Ordering::SeqCst);
            async move {
                if failed > 0 {
                    Ok(())
                } else {
                    Err("no handshake yet".to_owned())
                }
            }
        },
    )
    .await;
    assert!(
        untrusted_receiver.received().is_empty(),
        "an endpoint with an untrusted certificate got the event"
    );
}
