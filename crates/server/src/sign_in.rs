//! What signing in needs: password hashing, the login rate limiter and the client address it
//! counts by, session cookies and CSRF tokens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentvault_core::{Error, ErrorKind, Result};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::{HeaderMap, HeaderValue, header};
use zeroize::Zeroizing;

use crate::AppState;

/// The cookie that carries a console session token.
pub const SESSION_COOKIE: &str = "av_session";
/// The header the console sends its CSRF token in on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
    /// Failed attempts per account from one client address before that pair must wait.
    pub failures_per_account: u32,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits { per_client: 30, failures_per_account: 5, window: Duration::from_secs(15 * 60) }
    }
}

/// The first wait once a client has used up its failures on an account; it doubles with each
/// further failure, up to the window.
const FIRST_BACKOFF: Duration = Duration::from_secs(60);

/// Failures of one (client, account) pair.
struct Failures {
    count: u32,
    last: Instant,
}

/// Sign-in attempts by client (a fixed window), and failures by the pair of client and account
/// (with a growing wait). Keying failures on the pair means that someone guessing from
/// elsewhere cannot lock the account's owner out; the per-client budget still caps how fast
/// any one client can guess.
pub struct LoginLimiter {
    limits: LoginLimits,
    attempts: Mutex<HashMap<String, (Instant, u32)>>,
    failures: Mutex<HashMap<String, Failures>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pair(client: &str, account: &str) -> String {
    format!("{client}\u{0}{}", account.to_lowercase())
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter { limits, attempts: Mutex::new(HashMap::new()), failures: Mutex::new(HashMap::new()) }
    }

    /// How long a pair with `count` failures waits after its last one (zero under the limit).
    fn backoff(&self, count: u32) -> Duration {
        if count < self.limits.failures_per_account.max(1) {
            return Duration::ZERO;
        }
        let doublings = (count - self.limits.failures_per_account.max(1)).min(16);
        FIRST_BACKOFF.saturating_mul(1 << doublings).min(self.limits.window)
    }

    /// Counts an attempt from `client` and refuses it when the client is over its budget, or
    /// when this client failed on this account too often and must still wait.
    pub fn check(&self, client: &str, account: &str) -> Result<()> {
        let now = Instant::now();
        let window = self.limits.window;
        let client_wait = {
            let mut attempts = lock(&self.attempts);
            if attempts.len() > 100_000 {
                attempts.retain(|_, (start, _)| now.duration_since(*start) < window);
            }
            let entry = attempts.entry(client.to_owned()).or_insert((now, 0));
            if now.duration_since(entry.0) >= window {
                *entry = (now, 0);
            }
            let wait = (entry.1 >= self.limits.per_client).then(|| window - now.duration_since(entry.0));
            entry.1 = entry.1.saturating_add(1);
            wait
        };
        let pair_wait = {
            let failures = lock(&self.failures);
            failures.get(&pair(client, account)).and_then(|f| {
                let wait = self.backoff(f.count);
                let elapsed = now.duration_since(f.last);
                (elapsed < wait).then(|| wait - elapsed)
            })
        };
        match client_wait.max(pair_wait) {
            Some(wait) => Err(rate_limited((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))),
            None => Ok(()),
        }
    }

    /// Records a failed attempt on `account` from `client`.
    pub fn failed(&self, client: &str, account: &str) {
        let now = Instant::now();
        let window = self.limits.window;
        let mut failures = lock(&self.failures);
        if failures.len() > 100_000 {
            failures.retain(|_, f| now.duration_since(f.last) < window);
        }
        let f = failures.entry(pair(client, account)).or_insert(Failures { count: 0, last: now });
        // A quiet window forgives earlier failures.
        if now.duration_since(f.last) >= window {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    pub fn succeeded(&self, client: &str, account: &str) {
        lock(&self.failures).remove(&pair(client, account));
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

impl AppState {
    /// The client address for rate limiting: the peer, or the nearest `X-Forwarded-For` entry
    /// when agentvault is configured to trust its reverse proxy.
    pub fn client_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
        if self.options.trust_forwarded_for
            && let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok())
            && let Some(last) = forwarded.rsplit(',').map(str::trim).find(|s| !s.is_empty())
        {
            return last.parse::<std::net::IpAddr>().map(client_key).unwrap_or_else(|_| last.to_owned());
        }
        peer.map(|p| client_key(p.ip())).unwrap_or_else(|| "unknown".to_owned())
    }
}

/// The key a client is rate-limited by: its IPv4 address, or the /64 network of its IPv6 address
/// (one host usually holds a whole /64, and would otherwise get a fresh budget per address).
fn client_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_clients_and_pairs_of_client_and_account() {
        let l =
            LoginLimiter::new(LoginLimits { per_client: 3, failures_per_account: 2, window: Duration::from_secs(600) });
        for _ in 0..3 {
            l.check("10.0.0.1", "a@x.io").unwrap();
        }
        assert_eq!(l.check("10.0.0.1", "b@x.io").unwrap_err().code, "rate_limited");
        // Another client is not affected...
        l.check("10.0.0.2", "a@x.io").unwrap();
        // ...and failures on an account hold back only the client that made them.
        l.failed("10.0.0.2", "A@x.io");
        l.failed("10.0.0.2", "a@x.io");
        let e = l.check("10.0.0.2", "a@x.io").unwrap_err();
        assert_eq!(e.code, "rate_limited");
        assert_eq!(e.retry_after, Some(60));
        l.check("10.0.0.3", "a@x.io").unwrap();
        l.check("10.0.0.2", "b@x.io").unwrap();
        l.succeeded("10.0.0.2", "a@x.io");
        l.check("10.0.0.4", "a@x.io").unwrap();
    }

    #[test]
    fn the_wait_doubles_with_each_further_failure_up_to_the_window() {
        let l = LoginLimiter::new(LoginLimits {
            per_client: 100,
            failures_per_account: 2,
            window: Duration::from_secs(600),
        });
        assert_eq!(l.backoff(1), Duration::ZERO);
        assert_eq!(l.backoff(2), Duration::from_secs(60));
        assert_eq!(l.backoff(3), Duration::from_secs(120));
        assert_eq!(l.backoff(5), Duration::from_secs(480));
        assert_eq!(l.backoff(6), Duration::from_secs(600));
        assert_eq!(l.backoff(40), Duration::from_secs(600));
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

#[cfg(test)]
mod client_tests {
    use super::client_key;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()));
        let b = client_key("2001:db8:1:2:ffff:1:2:3".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()));
        let c = client_key("2001:db8:1:3::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into())), "192.0.2.7");
        assert_eq!(client_key("192.0.2.7".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST.into())), "192.0.2.7");
    }
}
