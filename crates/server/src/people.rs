//! What signing in needs: password hashing, the login rate limiter, session cookies and CSRF
//! tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentvault_core::{Error, ErrorKind, Result};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::{HeaderMap, HeaderValue, header};
use zeroize::Zeroizing;

/// The cookie that carries a console session token.
pub const SESSION_COOKIE: &str = "av_session";
/// The header the console sends its CSRF token in on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of session tokens.
pub const SESSION_TOKEN_PREFIX: &str = "avs_";
/// Prefix of personal access tokens.
pub const PERSONAL_TOKEN_PREFIX: &str = "avp_";

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes), off the async
/// workers: a hash takes tens of milliseconds on purpose.
pub async fn hash_password(password: Zeroizing<String>) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("hashing a password: {e}")))?
}

/// Whether `password` matches `hash`. With no hash (no such account) it verifies against a
/// hash of something else, so that a wrong email takes as long to refuse as a wrong password.
pub async fn verify_password(password: Zeroizing<String>, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let argon = argon2::Argon2::default();
        match hash {
            Some(h) => argon.verify_password(password.as_bytes(), h.as_str()).is_ok(),
            None => {
                let _ = argon.verify_password(password.as_bytes(), dummy_hash());
                false
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        argon2::Argon2::default()
            .hash_password(b"agentvault: there is no such account")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The CSRF token of a session: derived from its token, so nothing more is stored, and useless
/// to anyone who does not hold the session cookie.
pub fn csrf_token(session_token: &str) -> String {
    let mut input = Zeroizing::new(b"agentvault csrf\0".to_vec());
    input.extend_from_slice(session_token.as_bytes());
    agentvault_crypto::sha256(&input)[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The session token from the request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session (or, with `max_age` 0, for clearing it).
pub fn session_set_cookie(token: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let value = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("av_session=; Path=/; Max-Age=0"))
}

/// Limits on sign-in attempts.
#[derive(Clone, Debug)]
pub struct LoginLimits {
    /// Attempts per client address per window.
    pub per_client: u32,
    /// Failed attempts per account per window.
    pub failures_per_account: u32,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits { per_client: 30, failures_per_account: 5, window: Duration::from_secs(15 * 60) }
    }
}

/// Fixed-window counters of sign-in attempts by client and failures by account.
pub struct LoginLimiter {
    limits: LoginLimits,
    counters: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter { limits, counters: Mutex::new(HashMap::new()) }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds until `key` may try again, if it is over `limit`.
    fn blocked(&self, key: &str, limit: u32) -> Option<u64> {
        let now = Instant::now();
        let counters = self.counters();
        let (start, count) = counters.get(key)?;
        let elapsed = now.duration_since(*start);
        (elapsed < self.limits.window && *count >= limit).then(|| (self.limits.window - elapsed).as_secs().max(1))
    }

    fn bump(&self, key: String) {
        let now = Instant::now();
        let mut counters = self.counters();
        if counters.len() > 100_000 {
            let window = self.limits.window;
            counters.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = counters.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.limits.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// Counts an attempt from `client` and refuses it when the client or the account is over
    /// its limit.
    pub fn check(&self, client: &str, account: &str) -> Result<()> {
        let client_key = format!("client:{client}");
        let account_key = format!("account:{}", account.to_lowercase());
        let wait = self
            .blocked(&client_key, self.limits.per_client)
            .or_else(|| self.blocked(&account_key, self.limits.failures_per_account));
        self.bump(client_key);
        match wait {
            Some(secs) => Err(rate_limited(secs)),
            None => Ok(()),
        }
    }

    pub fn failed(&self, account: &str) {
        self.bump(format!("account:{}", account.to_lowercase()));
    }

    pub fn succeeded(&self, account: &str) {
        self.counters().remove(&format!("account:{}", account.to_lowercase()));
    }
}

/// 429 with the wait in the message; the response carries it as `Retry-After` too.
pub fn rate_limited(secs: u64) -> Error {
    let mut e = Error::new(
        ErrorKind::RateLimited,
        "rate_limited",
        format!("too many sign-in attempts; try again in {secs} seconds"),
    );
    e.retry_after = Some(secs);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_clients_and_accounts() {
        let l =
            LoginLimiter::new(LoginLimits { per_client: 3, failures_per_account: 2, window: Duration::from_secs(60) });
        for _ in 0..3 {
            l.check("10.0.0.1", "a@x.io").unwrap();
        }
        assert_eq!(l.check("10.0.0.1", "b@x.io").unwrap_err().code, "rate_limited");
        // Another client is not affected...
        l.check("10.0.0.2", "a@x.io").unwrap();
        // ...but an account with too many failures is, from anywhere.
        l.failed("A@x.io");
        l.failed("a@x.io");
        assert_eq!(l.check("10.0.0.3", "a@x.io").unwrap_err().code, "rate_limited");
        l.succeeded("a@x.io");
        l.check("10.0.0.4", "a@x.io").unwrap();
    }

    #[test]
    fn csrf_tokens_depend_on_the_session() {
        assert_ne!(csrf_token("avs_a"), csrf_token("avs_b"));
        assert_eq!(csrf_token("avs_a"), csrf_token("avs_a"));
        assert_eq!(csrf_token("avs_a").len(), 32);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("theme=dark; av_session=avs_xyz; other=1"));
        assert_eq!(session_cookie(&h).as_deref(), Some("avs_xyz"));
        let set = session_set_cookie("avs_xyz", Duration::from_secs(60), true);
        let s = set.to_str().unwrap();
        assert!(
            s.contains("HttpOnly") && s.contains("SameSite=Lax") && s.contains("Secure") && s.contains("Max-Age=60")
        );
    }
}
