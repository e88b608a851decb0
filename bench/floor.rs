//! The floor: the least an HTTP server can do to answer the agent read route.
//!
//! Same stack as `agentvault serve` (axum on a multi-threaded tokio runtime), same route, a
//! response of the same shape and size, and one comparison of the `Authorization` header before
//! answering. No read model, no decryption, no audit log. `bench/run.sh` measures it next to the
//! real server so the numbers say how much of the read path is the vault's own work.
//!
//! Usage: `floor [ADDR]` (default `127.0.0.1:0`, also read from `FLOOR_LISTEN`). The token it
//! accepts is `FLOOR_TOKEN` (default [`DEFAULT_TOKEN`]). Prints `floor listening on http://ADDR`
//! once it accepts connections.

use std::io::Write;

// The same allocator as agentvault, so that the floor is the best HTTP-alone baseline, not one
// handicapped by glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const DEFAULT_TOKEN: &str = "avk_floor_benchmark_token_0123456789abcdefghijklmnopq";

/// The body `agentvault` answers for the secret `bench/run.sh` creates (same name and value).
const BODY: &str =
    r#"{"name":"stripe_api_key","type":"single","value":"sk_live_51HbenchAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"}"#;

async fn read_secret(State(expected): State<Arc<str>>, headers: HeaderMap) -> Response {
    if headers.get(AUTHORIZATION).map(HeaderValue::as_bytes) != Some(expected.as_bytes()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // The same headers the real server sets on every response, so both answers weigh the same.
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        BODY,
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("FLOOR_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let token = std::env::var("FLOOR_TOKEN").unwrap_or_else(|_| DEFAULT_TOKEN.to_owned());
    let expected: Arc<str> = format!("Bearer {token}").into();

    let app = Router::new().route("/api/v1/agents/{agent_id}/secrets/{name}", get(read_secret)).with_state(expected);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "floor listening on http://{}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await?;
    Ok(())
}
