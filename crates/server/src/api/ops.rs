use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers, the audit log is writable and the read model is not behind
/// the database for longer than `--max-read-model-lag`.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "ready"), (status = 503, description = "not ready, with the reason")))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, String) {
    if let Err(e) = st.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("database: {}\n", e.message));
    }
    if !st.audit.is_healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, "audit log: the last write failed\n".into());
    }
    if let Some((behind, for_)) = st.feed.lagging(st.options.max_read_model_lag) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("read model: {behind} changes behind the database for {:.1} s\n", for_.as_secs_f64()),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text")))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.metrics.render())
}

/// This API's OpenAPI document, generated from the code.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()), responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], st.openapi_json.get().cloned().unwrap_or_default())
}
