//! The console's static files, embedded in the binary. Pages link them by a content-hashed name
//! (`/assets/editor.1a2b3c4d5e6f.js`), served with a year-long immutable cache lifetime, so a
//! browser fetches each version once; gzip-compressed for clients that accept it (compressed once,
//! when first asked for). The plain names still answer, revalidated on every use.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/console.js")),
    // CodeMirror 6 with Python, bundled by assets/editor/build.sh.
    ("editor.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/editor.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../assets/favicon.svg")),
];

/// An embedded file, with its hashed name and its gzip encoding.
struct Asset {
    name: &'static str,
    hashed: String,
    kind: &'static str,
    bytes: &'static [u8],
    /// Quoted strong ETag: the content hash.
    etag: String,
    gzip: Option<Vec<u8>>,
}

/// Hex digits of the content hash in a file's name (48 bits: a collision between two versions of
/// one file is not a practical concern).
const HASH_HEX: usize = 12;

fn all() -> &'static [Asset] {
    static ALL: OnceLock<Vec<Asset>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, kind, bytes)| {
                let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                let short = &hex[..HASH_HEX];
                let hashed = match name.rsplit_once('.') {
                    Some((stem, ext)) => format!("{stem}.{short}.{ext}"),
                    None => format!("{name}.{short}"),
                };
                Asset { name, hashed, kind, bytes, etag: format!("\"{short}\""), gzip: gzip(bytes) }
            })
            .collect()
    })
}

/// The gzip encoding of `bytes`, when it is smaller.
fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 3), flate2::Compression::best());
    enc.write_all(bytes).ok()?;
    let out = enc.finish().ok()?;
    (out.len() < bytes.len()).then_some(out)
}

/// The URL of an embedded file by its plain name (`editor.js`), with its content hash.
pub fn url(name: &str) -> String {
    match all().iter().find(|a| a.name == name) {
        Some(a) => format!("/assets/{}", a.hashed),
        None => format!("/assets/{name}"),
    }
}

/// Whether the request accepts gzip (`Accept-Encoding: gzip`, not refused with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts
                .any(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        },
    )
}

/// `GET /assets/{file}`: a hashed name is cached for a year; a plain name is revalidated.
pub(super) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let found = all().iter().find_map(|a| {
        if a.hashed == file {
            Some((a, true))
        } else if a.name == file {
            Some((a, false))
        } else {
            None
        }
    });
    let Some((a, immutable)) = found else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such asset")
            .into_response();
    };
    respond(a, immutable, &headers)
}

/// `GET /favicon.ico`: browsers ask for it whatever the page links.
pub(super) async fn favicon(headers: HeaderMap) -> Response {
    match all().iter().find(|a| a.name == "favicon.svg") {
        Some(a) => respond(a, false, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn respond(a: &Asset, immutable: bool, headers: &HeaderMap) -> Response {
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let etag_matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == a.etag));
    let mut resp = if etag_matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match (&a.gzip, accepts_gzip(headers)) {
            (Some(gz), true) => {
                let mut r = gz.clone().into_response();
                r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            _ => a.bytes.into_response(),
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(etag) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, etag);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_change_with_the_content_and_gzip_is_smaller() {
        let js = all().iter().find(|a| a.name == "editor.js").map(|a| (a.hashed.clone(), a.gzip.clone()));
        let Some((hashed, Some(gz))) = js else { unreachable!("editor.js is embedded and compresses") };
        assert!(hashed.starts_with("editor.") && hashed.ends_with(".js") && hashed.len() == "editor..js".len() + 12);
        assert!(gz.len() * 2 < include_bytes!("../../assets/editor.js").len());
        assert_eq!(url("editor.js"), format!("/assets/{hashed}"));
    }

    #[test]
    fn gzip_is_offered_unless_refused() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
