//! The caller's own account: who they are, their password, personal access tokens and sessions.

use agentvault_core::audit::{Action, Outcome};
use agentvault_core::model::{PERSONAL_TOKEN_ID_PREFIX, PERSONAL_TOKEN_PREFIX, PersonalToken, Principal};
use agentvault_core::{Error, Result, validate};
use agentvault_store::PasswordChange;
use axum::http::{HeaderMap, header};

use super::Body;
use crate::api::credential_status;
use crate::api::me::{ChangePassword, CreateToken, MeOut, PasswordChanged, SessionOut, TokenCreated, TokenOut};
use crate::auth::{SHOWN_PREFIX_LEN, generate_token, hash_token, new_id};
use crate::sign_in::{hash_password, session_cookie, verify_password};
use crate::{AppState, now_millis, parse_rfc3339, rfc3339};

fn account_gone() -> Error {
    Error::unauthenticated("your account no longer exists")
}

/// The caller: user, workspaces and roles; `csrf` for requests made with the session cookie.
pub async fn me(st: &AppState, p: &Principal, csrf: Option<String>) -> Result<MeOut> {
    let user_id = AppState::user_id_of(p)?;
    let user = st.store.get_user(user_id).await?.ok_or_else(account_gone)?;
    Ok(MeOut { workspaces: st.workspaces_of(user_id).await?, user: user.into(), csrf_token: csrf })
}

/// Changes the caller's password (wrong current passwords are rate-limited per `client` like
/// sign-ins). Every other session of the caller ends; with `revoke_tokens`, their personal
/// access tokens are revoked too. The credential of the request (in `headers`) stays.
pub async fn change_password(
    st: &AppState,
    p: &Principal,
    client: &str,
    headers: &HeaderMap,
    body: Body<ChangePassword>,
) -> Result<PasswordChanged> {
    let user_id = AppState::user_id_of(p)?;
    let body = body?;
    let user = st.store.get_user(user_id).await?.ok_or_else(account_gone)?;
    st.login_limiter.check(client, &user.email)?;
    let hash = st.store.user_by_email(&user.email).await?.map(|(_, h)| h);
    if !verify_password(body.current_password, hash).await {
        st.login_limiter.failed(client, &user.email);
        for e in st.user_events(user_id, p.actor(), Action::PasswordChange, Outcome::Denied, "wrong_password").await? {
            st.audit.append(e).await?;
        }
        return Err(Error::invalid("current_password", "the current password is wrong"));
    }
    st.login_limiter.succeeded(client, &user.email);
    validate::password("new_password", &body.new_password, &user.email)?;
    let hash = hash_password(body.new_password).await?;
    let now = now_millis();
    // The credential of this request stays: its session, or its personal access token.
    let (keep_session, keep_token) = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let token = value.to_str().ok().and_then(|v| v.split_once(' ')).map(|(_, t)| t.trim());
            let keep = match token {
                Some(t) => st.store.personal_token_by_hash(&hash_token(t)).await?.map(|t| t.id),
                None => None,
            };
            (None, keep)
        }
        None => match session_cookie(headers) {
            Some(cookie) => (Some(st.session_of(&cookie, now).await?.id), None),
            None => (None, None),
        },
    };
    let detail = if body.revoke_tokens { "other_sessions_ended,tokens_revoked" } else { "other_sessions_ended" };
    let audit = st.user_events(user_id, p.actor(), Action::PasswordChange, Outcome::Success, detail).await?;
    let change = PasswordChange {
        user_id,
        password_hash: &hash,
        now,
        keep_session: keep_session.as_deref(),
        revoke_tokens: body.revoke_tokens,
        keep_token: keep_token.as_deref(),
    };
    let (sessions_ended, tokens_revoked) = st.store.set_password(&change, &audit).await?;
    Ok(PasswordChanged { sessions_ended, tokens_revoked })
}

/// The caller's personal access tokens (never the tokens themselves).
pub async fn tokens(st: &AppState, p: &Principal) -> Result<Vec<TokenOut>> {
    let user_id = AppState::user_id_of(p)?;
    let now = now_millis();
    let tokens = st.store.list_personal_tokens(user_id).await?;
    Ok(tokens.into_iter().map(|t| TokenOut::new(t, now)).collect())
}

/// Creates a personal access token that acts as the caller.
pub async fn create_token(st: &AppState, p: &Principal, body: Body<CreateToken>) -> Result<TokenCreated> {
    let user_id = AppState::user_id_of(p)?;
    let body = body?;
    let name = validate::display_name("name", &body.name)?;
    let now = now_millis();
    let expires_at = body.expires_at.as_deref().map(|t| parse_rfc3339("expires_at", t)).transpose()?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::invalid("expires_at", "expires_at is in the past; give a time in the future"));
    }
    let token = generate_token(PERSONAL_TOKEN_PREFIX)?;
    let record = PersonalToken {
        id: new_id(PERSONAL_TOKEN_ID_PREFIX)?,
        user_id: user_id.to_owned(),
        name,
        prefix: token[..SHOWN_PREFIX_LEN].to_owned(),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    let audit = st.user_events(user_id, p.actor(), Action::TokenCreate, Outcome::Success, &record.id).await?;
    st.store.create_personal_token(&record, &hash_token(&token), &audit).await?;
    Ok(TokenCreated { info: TokenOut::new(record, now), token })
}

/// Revokes one of the caller's personal access tokens.
pub async fn revoke_token(st: &AppState, p: &Principal, token_id: &str) -> Result<TokenOut> {
    let user_id = AppState::user_id_of(p)?;
    let now = now_millis();
    let audit = st.user_events(user_id, p.actor(), Action::TokenRevoke, Outcome::Success, token_id).await?;
    let token = st.store.revoke_personal_token(user_id, token_id, now, &audit).await?;
    Ok(TokenOut::new(token, now))
}

/// The caller's console sessions.
pub async fn sessions(st: &AppState, p: &Principal) -> Result<Vec<SessionOut>> {
    let user_id = AppState::user_id_of(p)?;
    let now = now_millis();
    Ok(st
        .store
        .list_sessions(user_id)
        .await?
        .into_iter()
        .map(|s| SessionOut {
            status: credential_status(s.revoked_at.is_some(), s.is_usable(now)),
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            id: s.id,
            client: s.client,
            user_agent: s.user_agent,
        })
        .collect())
}

/// Ends one of the caller's sessions (e.g. on a lost laptop).
pub async fn revoke_session(st: &AppState, p: &Principal, session_id: &str) -> Result<()> {
    let user_id = AppState::user_id_of(p)?;
    let audit = st.user_events(user_id, p.actor(), Action::SessionRevoke, Outcome::Success, session_id).await?;
    st.store.revoke_session(user_id, session_id, now_millis(), &audit).await?;
    Ok(())
}
