//! Request extractors whose rejections are agentvault errors (`{"error": ...}`), and the early
//! refusal of oversized bodies.

use agentvault_core::Error;
use axum::body::HttpBody;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The largest request body: the 64 KiB value limit, with room for JSON escaping and the other
/// fields. Larger bodies are refused with 413 before they are read.
pub const BODY_LIMIT: usize = 3 * agentvault_core::validate::VALUE_MAX_BYTES;

fn body_too_large() -> Error {
    Error::too_large(
        "payload_too_large",
        format!(
            "the request body is larger than {BODY_LIMIT} bytes; secret values are limited to {} bytes",
            agentvault_core::validate::VALUE_MAX_BYTES
        ),
    )
}

/// Refuses a request whose declared `Content-Length` is over the limit without reading it, and
/// reads any other body whole within the body timeout (a client that trickles its body gets a
/// 408 and its connection closed, instead of holding it). Requests without a body pass as they are.
/// (Bodies over the limit without a declared length are refused once the limit is reached.)
/// Returns the request to serve, or the answer that refuses it.
pub async fn read_body(st: &AppState, req: Request) -> Result<Request, Response> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(closing(ApiError(body_too_large()).into_response()));
    }
    if req.body().size_hint().exact() == Some(0) {
        return Ok(req);
    }
    let limit = st.options.connections.body_timeout;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Ok(Err(_)) => Err(closing(ApiError(body_too_large()).into_response())),
        Err(_) => {
            let e = Error::new(
                agentvault_core::ErrorKind::InvalidInput,
                "request_timeout",
                format!("the request body did not arrive within {} s; send it at once", limit.as_secs_f32()),
            );
            let mut resp = ApiError(e).into_response();
            *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
            Err(closing(resp))
        }
    }
}

/// The body was not read (whole): the connection cannot be reused.
fn closing(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    resp
}

/// `Json<T>` with agentvault error bodies.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(charset) = foreign_charset(req.headers()) {
            return Err(ApiError(Error::new(
                agentvault_core::ErrorKind::UnsupportedMediaType,
                "unsupported_media_type",
                format!(
                    "the request body is declared as {charset}; send JSON in UTF-8 (Content-Type: application/json)"
                ),
            )));
        }
        if !json_content_type(req.headers()) {
            return Err(ApiError(missing_json_content_type()));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rej| {
            ApiError(if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large()
            } else {
                Error::invalid("body", "the request body could not be read")
            })
        })?;
        // Every body is an object. serde would also read an object's fields, in order, from an
        // array of their values; the schema allows an object only.
        if let Some(kind) = not_an_object(&bytes) {
            return Err(ApiError(Error::invalid(
                "body",
                format!("the request body must be a JSON object, not {kind}"),
            )));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(ApiError(json_error(&rej))),
        }
    }
}

/// Whether the request says its body is JSON: `application/json`, or `application/…+json`.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn missing_json_content_type() -> Error {
    Error::invalid("body", "send the request body as JSON with the header Content-Type: application/json")
}

/// What a well-formed JSON body that is not an object is (an array, a string, …); none for an
/// object, or for a body that is not JSON at all (its syntax error is reported instead).
fn not_an_object(body: &[u8]) -> Option<&'static str> {
    let first = *body.iter().find(|b| !b" \t\r\n".contains(b))?;
    if first == b'{' || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return None;
    }
    Some(match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    })
}

/// The `charset` of the request's `Content-Type` when it is not UTF-8 (JSON is read as UTF-8
/// only; a body in another encoding would be misread). The value is cut short for the message.
fn foreign_charset(headers: &axum::http::HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let charset = ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches('"').to_owned())
    })?;
    let utf8 = charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8");
    (!utf8).then(|| format!("charset={}", charset.chars().take(32).collect::<String>().escape_default()))
}

/// A JSON body as extracted: the value, or why it could not be read.
pub type JsonBody<T> = Result<ApiJson<T>, ApiError>;

/// The body for a service, which reports its error only after its permission check.
pub fn body<T>(b: JsonBody<T>) -> agentvault_core::Result<T> {
    b.map(|ApiJson(v)| v).map_err(|e| e.0)
}

/// The query for a service, which reports its error only after its permission check.
pub fn query<T>(q: Result<ApiQuery<T>, ApiError>) -> agentvault_core::Result<T> {
    q.map(|ApiQuery(v)| v).map_err(|e| e.0)
}

fn json_error(rej: &JsonRejection) -> Error {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return body_too_large();
    }
    match rej {
        JsonRejection::MissingJsonContentType(_) => missing_json_content_type(),
        JsonRejection::JsonSyntaxError(e) => {
            Error::invalid("body", format!("the request body is not valid JSON: {}", inner_message(e)))
        }
        JsonRejection::JsonDataError(e) => {
            let message = without_input(&inner_message(e));
            let field = data_error_field(&message).unwrap_or("body").to_owned();
            Error::invalid(field, format!("the request body does not fit: {message}"))
        }
        _ => Error::invalid("body", "the request body could not be read"),
    }
}

/// The field a data error is about: the path serde puts before the message (`args: key 'a'
/// appears twice ...`), when there is one made of plain names; none for the body as a whole.
fn data_error_field(message: &str) -> Option<&str> {
    let (mut path, rest) = message.split_once(": ")?;
    if rest.starts_with("unknown field") {
        // serde names the field that should not be there: the error is about its object.
        path = path.rsplit_once('.').map(|(parent, _)| parent)?;
    }
    let plain = !path.is_empty()
        && path != "."
        && path.len() <= 200
        && path.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'));
    plain.then_some(path)
}

/// serde's type errors quote the offending input ("invalid type: integer `123`, expected a
/// string"); the input may be a password or a secret, so the quote is dropped, keeping the field
/// path and what was expected.
fn without_input(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some(start) = message.find(marker)
            && let Some(end) = message[start..].find(", expected")
        {
            let kind = marker.trim_end_matches(": ");
            return format!("{}{kind}{}", &message[..start], &message[start + end..]);
        }
    }
    message.to_owned()
}

/// The serde message without axum's generic preamble.
fn inner_message(e: &dyn std::error::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// `Path<T>` with agentvault error bodies.
#[derive(Clone)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError(path_error(&rej))),
        }
    }
}

fn path_error(rej: &PathRejection) -> Error {
    Error::invalid("path", format!("the URL path is malformed: {}", rej.body_text()))
}

/// `Query<T>` with agentvault error bodies.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiQuery(query_of(&parts.uri)?))
    }
}

/// The query string of `uri` read as `T` (what [`ApiQuery`] extracts).
pub fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> agentvault_core::Result<T> {
    match axum::extract::Query::<T>::try_from_uri(uri) {
        Ok(axum::extract::Query(v)) => Ok(v),
        Err(rej) => Err(query_error(&rej)),
    }
}

fn query_error(rej: &QueryRejection) -> Error {
    Error::invalid("query", format!("the query string is malformed: {}", inner_message(rej)))
}

#[cfg(test)]
mod tests {
    use super::{header, json_content_type, not_an_object, without_input};

    #[test]
    fn bodies_must_be_objects_declared_as_json() {
        for (body, kind) in [
            (&b" [\"Bot\"]"[..], Some("an array")),
            (b"\"Bot\"", Some("a string")),
            (b"12", Some("a number")),
            (b"\ntrue", Some("a boolean")),
            (b"null", Some("null")),
            (b" {\"name\": \"Bot\"}", None),
            // Not JSON at all: its syntax error is reported instead.
            (b"[1,", None),
            (b"", None),
        ] {
            assert_eq!(not_an_object(body), kind, "{}", String::from_utf8_lossy(body));
        }
        let with = |ct: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            json_content_type(&h)
        };
        assert!(
            with("application/json") && with("Application/JSON; charset=utf-8") && with("application/merge-patch+json")
        );
        assert!(!with("text/plain") && !with("application/jsonx") && !with("text/json"));
        assert!(!json_content_type(&axum::http::HeaderMap::new()));
    }

    #[test]
    fn data_errors_name_their_field() {
        use super::data_error_field;
        assert_eq!(data_error_field("args: key 'a' appears twice at line 1 column 9"), Some("args"));
        assert_eq!(data_error_field("conversation.state: key 'a' appears twice"), Some("conversation.state"));
        assert_eq!(data_error_field("missing field `name` at line 1 column 2"), None);
        assert_eq!(data_error_field(".: invalid type, expected a map"), None);
        assert_eq!(data_error_field("agent: unknown field `agent`, expected one of `name`"), None);
        assert_eq!(data_error_field("conversation.mood: unknown field `mood`, expected `id`"), Some("conversation"));
    }

    #[test]
    fn serde_errors_lose_the_quoted_input() {
        assert_eq!(
            without_input("password: invalid type: integer `987654321987`, expected a string at line 1 column 41"),
            "password: invalid type, expected a string at line 1 column 41"
        );
        assert_eq!(
            without_input("role: invalid value: string \"hunter2\", expected one of x at line 1 column 9"),
            "role: invalid value, expected one of x at line 1 column 9"
        );
        assert_eq!(without_input("missing field `name` at line 1 column 2"), "missing field `name` at line 1 column 2");
    }
}
