//! A bare HTTP/1.1 exchange over one TCP connection, for requests a server may answer before
//! reading them in full (a 10 MB body gets `413` as soon as its `Content-Length` is seen).
//!
//! hyper's client gives up on such a request when writing the rest of the body fails
//! (`Broken pipe`), even though the answer is already in its socket. Here the body is written
//! by one task while another reads the answer, write errors are ignored, and the answer is
//! whatever the server sent before closing.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use kassa_client::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (head and body).
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Body bytes per write, so the writer notices a closed connection early.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Sends `method path_and_query` with `headers` (plus `Host`, `Content-Length` and
/// `Connection: close`) and `body` to `base_url` (`http://host:port`), and reads the answer
/// even if the server stops reading the body. Err says what went wrong.
pub async fn send_raw_http(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<Response, String> {
    let authority = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base_url} is not an http:// URL"))?
        .trim_end_matches('/')
        .to_owned();
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let exchange = async {
        let stream = TcpStream::connect(&authority)
            .await
            .map_err(|error| format!("connecting to {authority}: {error}"))?;
        let (mut reader, mut writer) = stream.into_split();
        let write = tokio::spawn(async move {
            // Errors here are expected when the server answers early and closes.
            if writer.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for chunk in body.chunks(WRITE_CHUNK_BYTES) {
                if writer.write_all(chunk).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        let mut answer = Vec::new();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                // A reset after the answer arrived still leaves the answer.
                Err(error) if answer.is_empty() => return Err(format!("reading: {error}")),
                Err(_) => break,
            }
            if answer.len() > RESPONSE_BYTES_MAX {
                return Err(format!("answer longer than {RESPONSE_BYTES_MAX} bytes"));
            }
            if complete_response(&answer).is_some() {
                break;
            }
        }
        write.abort();
        parse_response(&answer)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {EXCHANGE_TIMEOUT:?}"))?
}

/// `Some(total length)` once `answer` holds a head and a `Content-Length` body.
fn complete_response(answer: &[u8]) -> Option<usize> {
    let head_end = find(answer, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    (answer.len() >= head_end + length).then_some(head_end + length)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn parse_response(answer: &[u8]) -> Result<Response, String> {
    let text = || String::from_utf8_lossy(answer).into_owned();
    let head_end =
        find(answer, b"\r\n\r\n").ok_or_else(|| format!("no HTTP head in {:?}", text()))?;
    let head = std::str::from_utf8(&answer[..head_end])
        .map_err(|_| format!("HTTP head is not UTF-8: {:?}", text()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|error| format!("header {name:?}: {error}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|error| format!("header {name}: {error}"))?;
        headers.append(name, value);
    }
    let body_start = head_end + 4;
    let body_end = match complete_response(answer) {
        Some(end) => end,
        None if headers.contains_key(http::header::CONTENT_LENGTH) => {
            return Err(format!("answer ended before its body: {:?}", text()));
        }
        // No length: the body runs to the close (chunked answers are not expected here).
        None => answer.len(),
    };
    Ok(Response {
        status,
        headers,
        body: Bytes::copy_from_slice(&answer[body_start..body_end]),
    })
}
