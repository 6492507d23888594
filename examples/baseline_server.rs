//! The bare-hyper baseline for the `burst` load generator: answers every request with
//! `200 {"ok":true}` after reading (and discarding) its body, so `burst --baseline` can show how
//! much of Kassa's latency and throughput is the HTTP stack itself and the client.
//!
//! ```text
//! cargo build --release -p kassa-examples --examples
//! target/release/examples/baseline_server --addr 127.0.0.1:0   # prints "listening on http://ADDR"
//! ```
//!
//! It serves until killed. `--threads` sets the tokio worker threads (default: one per core, as
//! `kassa serve` does).

use std::convert::Infallible;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;

/// The one answer this server gives.
const ANSWER: &[u8] = br#"{"ok":true}"#;

#[derive(Parser, Debug)]
#[command(about = "A bare hyper server answering 200 {\"ok\":true} to everything")]
struct Args {
    /// Where to listen; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: std::net::SocketAddr,
    /// tokio worker threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body to its end (like a real handler would) and drop it; a broken body still
    // gets the answer, there is nobody to tell.
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        builder.worker_threads(args.threads);
    }
    builder.enable_all().build()?.block_on(serve(args.addr))
}

async fn serve(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        // Accept errors (e.g. EMFILE under a connection storm) are transient: go on.
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // HTTP/1.1 with keep-alive, as `kassa serve` speaks it. A client that goes away
            // mid-request is not this server's problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
