//! The one error type of agentvault. The server maps [`ErrorKind`] to an HTTP status once.
//!
//! Messages are written for people and never carry a secret value: every constructor takes a
//! message composed by our own code, never the text of a value.

use std::borrow::Cow;
use std::fmt;

/// The category of an error; each maps to exactly one HTTP status in the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or a field breaks a rule.
    InvalidInput,
    /// 401: no credential, or one that is unknown, revoked or expired.
    Unauthenticated,
    /// 403: the credential is valid but not allowed to do this.
    Forbidden,
    /// 404: the target does not exist (or is not visible to the caller).
    NotFound,
    /// 409: the request conflicts with existing state (a duplicate name).
    Conflict,
    /// 413: the body or value is larger than allowed.
    TooLarge,
    /// 415: the body is in a media type or character set the server does not read.
    UnsupportedMediaType,
    /// 422: well-formed but semantically wrong (e.g. references an unknown agent).
    Unprocessable,
    /// 429: too many requests.
    RateLimited,
    /// 503: a dependency (database, audit log) is unavailable.
    Unavailable,
    /// 500: a bug or an unexpected failure; the message is generic.
    Internal,
}

/// An error with a stable snake_case `code`, a human `message` and, for input errors, the
/// request `field` it is about.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub field: Option<Cow<'static, str>>,
    /// For 429: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Error { kind, code: code.into(), message: message.into(), field: None, retry_after: None }
    }

    /// Attaches the name of the request field the error is about.
    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 `invalid_input` about `field`.
    pub fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidInput, "invalid_input", message).with_field(field)
    }

    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unauthenticated, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Forbidden, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Conflict, code, message)
    }

    pub fn too_large(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::TooLarge, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unprocessable, code, message)
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unavailable, "unavailable", message)
    }

    /// A 500 whose public message is generic; `context` goes to the server log only, so it must
    /// not contain a secret value either.
    pub fn internal(context: impl fmt::Display) -> Self {
        let mut e = Error::new(
            ErrorKind::Internal,
            "internal",
            "agentvault hit an unexpected error; the server log has details",
        );
        e.field = Some(Cow::Owned(format!("internal: {context}")));
        e
    }

    /// For internal errors, the log-only context; for others, `None`.
    pub fn internal_context(&self) -> Option<&str> {
        match self.kind {
            ErrorKind::Internal => self.field.as_deref(),
            _ => None,
        }
    }

    /// The request field, for errors about input (never the internal context).
    pub fn public_field(&self) -> Option<&str> {
        match self.kind {
            ErrorKind::Internal => None,
            _ => self.field.as_deref(),
        }
    }

    /// 403 `missing_access`: the agent may not read the secret.
    pub fn missing_access(agent_id: &str, secret_name: &str) -> Self {
        Error::new(
            ErrorKind::Forbidden,
            "missing_access",
            format!(
                "agent {agent_id} has no access to secret '{secret_name}'; an admin can grant it on the secret's Agent access list"
            ),
        )
    }

    /// 404 `secret_not_found`.
    pub fn secret_not_found(secret_name: &str) -> Self {
        Error::not_found("secret_not_found", format!("no secret named '{secret_name}' exists in this workspace"))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("field", &self.field)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
