//! Credentials: bearer tokens (admin tokens and API keys), stored only as SHA-256 hashes and
//! looked up in the read model by the hash of the presented token. Tokens carry 256 random bits,
//! so a fast hash is the right tool (no password stretching needed), and the lookup compares
//! hashes, never the token itself: timing can at most reveal bits of a hash.

use std::sync::Arc;

use agentvault_core::model::{Millis, Principal, Session};
use agentvault_core::{Error, Result};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;
use crate::read_model::{KeyEntry, TokenHash};
use crate::sign_in::{CSRF_HEADER, csrf_token, session_cookie};
use crate::{AppState, now_millis};

/// How many characters of a token are kept to recognise it in a list.
pub const SHOWN_PREFIX_LEN: usize = 12;

/// A new random token: the prefix and 256 random bits.
pub fn generate_token(prefix: &str) -> Result<String> {
    let bytes = agentvault_crypto::random_bytes::<32>().map_err(Error::internal)?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

pub fn hash_token(token: &str) -> TokenHash {
    agentvault_crypto::sha256(token.as_bytes())
}

/// A new random id with a type prefix (`agt_`, `sec_`, ...).
pub fn new_id(prefix: &str) -> Result<String> {
    let bytes = agentvault_crypto::random_bytes::<10>().map_err(Error::internal)?;
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

fn bearer(value: Option<&HeaderValue>) -> Result<&str> {
    let value = value.ok_or_else(|| {
        Error::unauthenticated(
            "no credential: send the header Authorization: Bearer <token> with an API key or admin token",
        )
    })?;
    let value = value.to_str().map_err(|_| {
        Error::unauthenticated("the Authorization header is malformed; use Authorization: Bearer <token>")
    })?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        Error::unauthenticated("the Authorization header is malformed; use Authorization: Bearer <token>")
    })?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Error::unauthenticated("the Authorization header is malformed; use Authorization: Bearer <token>"));
    }
    Ok(token)
}

fn unknown() -> Error {
    Error::unauthenticated("the credential is not valid: it is unknown, or was revoked")
}

fn usable_key(key: &KeyEntry, now: Millis) -> Result<()> {
    if key.meta.revoked_at.is_some() {
        return Err(Error::unauthenticated("this API key was revoked; ask an admin for a new one"));
    }
    if key.meta.expires_at.is_some_and(|t| now >= t) {
        return Err(Error::unauthenticated("this API key has expired; ask an admin for a new one"));
    }
    Ok(())
}

impl AppState {
    /// Resolves the bearer token of a request to an API key (the agent read path).
    pub fn authenticate_api_key(&self, authorization: Option<&HeaderValue>, now: Millis) -> Result<Arc<KeyEntry>> {
        let token = bearer(authorization)?;
        let hash = hash_token(token);
        match self.model.api_key(&hash) {
            Some(key) => {
                usable_key(&key, now)?;
                key.touch(now);
                Ok(key)
            }
            None if self.model.admin_token(&hash).is_some() => Err(Error::forbidden(
                "admin tokens do not read secrets as an agent; use an API key scoped to the agent (admins can reveal values with POST .../secrets/{name}/reveal)",
            )),
            // A personal access token (recognised by its prefix, so API keys never pay for the
            // lookup) is the wrong kind of credential; the caller checks it with
            // `refuse_personal_token` before answering 401.
            None => Err(unknown()),
        }
    }

    /// For a request refused as unknown on the agent read path: if it carried a valid personal
    /// access token, say that the credential is of the wrong kind (403) instead.
    pub async fn refuse_personal_token(
        &self,
        authorization: Option<&HeaderValue>,
        refusal: Error,
        now: Millis,
    ) -> Error {
        let Some(token) = personal_token_to_check(authorization, &refusal) else { return refusal };
        match self.store.personal_token_by_hash(&hash_token(token)).await {
            Ok(Some(t)) if t.is_usable(now) => Error::forbidden(
                "personal access tokens do not read secrets as an agent; use an API key scoped to the agent",
            ),
            _ => refusal,
        }
    }

    /// Resolves the credential of a request — a bearer token, or the console's session cookie —
    /// to a principal. Cookie-authenticated requests that change state must carry the session's
    /// CSRF token.
    pub async fn authenticate(&self, method: &Method, headers: &HeaderMap, now: Millis) -> Result<Principal> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let hash = hash_token(bearer(Some(value))?);
            if let Some(token) = self.model.admin_token(&hash) {
                if token.revoked_at.is_some() {
                    return Err(unknown());
                }
                return Ok(Principal::Setup { token_id: token.id.clone() });
            }
            if let Some(key) = self.model.api_key(&hash) {
                usable_key(&key, now)?;
                key.touch(now);
                return Ok(Principal::ApiKey {
                    key_id: key.meta.id.clone(),
                    workspace_id: key.meta.workspace_id.clone(),
                    scope: key.meta.scope.clone(),
                });
            }
            let token = self.store.personal_token_by_hash(&hash).await?.ok_or_else(unknown)?;
            if token.revoked_at.is_some() {
                return Err(Error::unauthenticated("this personal access token was revoked; create a new one"));
            }
            if !token.is_usable(now) {
                return Err(Error::unauthenticated("this personal access token has expired; create a new one"));
            }
            if token.last_used_at.is_none_or(|t| now - t > 60_000) {
                self.store.record_personal_token_use(&token.id, now).await?;
            }
            return self.user_principal(&token.user_id).await;
        }
        if let Some(cookie) = session_cookie(headers) {
            let session = self.session_of(&cookie, now).await?;
            let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
            if !safe {
                let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                if !agentvault_crypto::constant_time_eq(sent.as_bytes(), csrf_token(&cookie).as_bytes()) {
                    return Err(Error::new(
                        agentvault_core::ErrorKind::Forbidden,
                        "csrf_failed",
                        "this request changes state and needs the X-CSRF-Token header of your session; reload the page",
                    ));
                }
            }
            return self.user_principal(&session.user_id).await;
        }
        Err(Error::unauthenticated(
            "no credential: sign in, or send the header Authorization: Bearer <token> with a personal access token or API key",
        ))
    }

    /// A live session by its cookie token.
    pub async fn session_of(&self, token: &str, now: Millis) -> Result<Session> {
        let session = self
            .store
            .session_by_hash(&hash_token(token))
            .await?
            .ok_or_else(|| Error::unauthenticated("your session is not valid; sign in again"))?;
        if !session.is_usable(now) {
            return Err(Error::unauthenticated("your session has ended; sign in again"));
        }
        Ok(session)
    }

    /// A user with their roles.
    pub async fn user_principal(&self, user_id: &str) -> Result<Principal> {
        let roles = self.store.memberships_of(user_id).await?.into_iter().collect();
        Ok(Principal::User { user_id: user_id.to_owned(), roles })
    }
}

/// The authenticated caller of a request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> std::result::Result<Self, Self::Rejection> {
        Ok(Auth(state.authenticate(&parts.method, &parts.headers, now_millis()).await?))
    }
}

/// The `Authorization` header alone (cheaper than cloning every header).
pub struct Authorization(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        Ok(Authorization(parts.headers.get(AUTHORIZATION).cloned()))
    }
}

/// The token of a request refused as unknown that may be a personal access token (recognised by
/// its prefix, so that API keys never pay for the lookup): [`AppState::refuse_personal_token`]
/// looks it up; any other refusal it returns as it is.
pub(crate) fn personal_token_to_check<'a>(authorization: Option<&'a HeaderValue>, refusal: &Error) -> Option<&'a str> {
    let token = bearer(authorization).ok()?;
    (refusal.code == "unauthenticated" && token.starts_with(agentvault_core::model::PERSONAL_TOKEN_PREFIX))
        .then_some(token)
}
