//! The validation rules (README "Rules"). Each check returns an [`Error`] naming the field and
//! saying what a valid input looks like.

use crate::error::{Error, Result};

pub const SECRET_NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX_CHARS: usize = 1_000;
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;
pub const KV_PAIRS_MAX: usize = 100;
pub const KV_KEY_MAX: usize = 128;
/// The largest encoded value (the JSON encoding of the value), in bytes.
pub const VALUE_MAX_BYTES: usize = 65_536;

/// A secret name: 1–64 characters of `[a-z0-9_]`, starting with a letter.
pub fn secret_name(name: &str) -> Result<()> {
    secret_name_rule(name).map_err(|why| Error::invalid("name", why))
}

/// The reason a secret name is malformed, or `Ok`.
pub fn secret_name_rule(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("secret name is empty; use lowercase letters, digits and underscores, e.g. stripe_api_key".into());
    }
    if name.len() > SECRET_NAME_MAX {
        return Err(format!("secret name is {} characters long; the limit is {SECRET_NAME_MAX}", name.chars().count()));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("secret name must start with a lowercase letter (a-z), e.g. stripe_api_key".into());
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        return Err(format!("secret name may only contain lowercase letters, digits and underscores; found {bad:?}"));
    }
    Ok(())
}

/// An optional description: at most 1,000 characters, with line breaks and tabs but no other
/// control character (PostgreSQL's text cannot hold a NUL; both backends refuse the same).
pub fn description(text: &str) -> Result<()> {
    let n = text.chars().count();
    if n > DESCRIPTION_MAX_CHARS {
        return Err(Error::invalid(
            "description",
            format!("description is {n} characters long; the limit is {DESCRIPTION_MAX_CHARS}"),
        ));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Error::invalid(
            "description",
            format!(
                "description must not contain control characters (found U+{:04X}); line breaks and tabs are fine",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

/// A display name (agents, API keys, workspaces): 1–100 characters, not blank, no control
/// characters. Returns the name trimmed of surrounding whitespace.
pub fn display_name(field: &'static str, name: &str) -> Result<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(field, format!("{field} must not be empty")));
    }
    let n = trimmed.chars().count();
    if n > DISPLAY_NAME_MAX_CHARS {
        return Err(Error::invalid(
            field,
            format!("{field} is {n} characters long; the limit is {DISPLAY_NAME_MAX_CHARS}"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(trimmed.to_owned())
}

/// A key of a key/value secret: 1–128 characters of `[A-Za-z0-9_.-]`.
pub fn kv_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > KV_KEY_MAX {
        return Err(Error::invalid("value", format!("key/value keys must be 1 to {KV_KEY_MAX} characters long")));
    }
    if let Some(bad) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(Error::invalid(
            "value",
            format!("key '{}' may only contain letters, digits, '_', '.' and '-'; found {bad:?}", key.escape_default()),
        ));
    }
    Ok(())
}

pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 1_024;
pub const EMAIL_MAX: usize = 254;

/// An email address: trimmed, one `@`, a non-empty local part, a domain with a dot, no spaces.
/// Returns it trimmed.
pub fn email(text: &str) -> Result<String> {
    let e = text.trim();
    let bad = || Error::invalid("email", "give an email address such as ada@example.com");
    // Characters, as the API's schema counts them (an address may be internationalized).
    let n = e.chars().count();
    if n > EMAIL_MAX {
        return Err(Error::invalid(
            "email",
            format!("the email address is {n} characters long; the limit is {EMAIL_MAX}"),
        ));
    }
    if e.is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(e.to_owned())
}

/// A password: 12–1,024 characters, not trivially guessable. Never echoed in an error.
pub fn password(field: &'static str, password: &str, email: &str) -> Result<()> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_CHARS {
        return Err(Error::invalid(
            field,
            format!("the password is too short: use at least {PASSWORD_MIN_CHARS} characters"),
        ));
    }
    if n > PASSWORD_MAX_CHARS {
        return Err(Error::invalid(
            field,
            format!("the password is too long: at most {PASSWORD_MAX_CHARS} characters"),
        ));
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err(Error::invalid(field, "the password repeats too few characters to be safe; mix more of them"));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if lower == email.to_lowercase() || (local.len() >= 4 && lower.contains(&local)) {
        return Err(Error::invalid(field, "the password must not contain your email address"));
    }
    const COMMON: [&str; 8] =
        ["password", "123456789", "qwertyuiop", "letmein", "welcome", "iloveyou", "admin1234", "agentvault"];
    if COMMON.iter().any(|c| lower.contains(c)) {
        return Err(Error::invalid(field, "the password contains a commonly used word or sequence; choose another"));
    }
    Ok(())
}

pub const FUNCTION_CODE_MAX_BYTES: usize = 65_536;
pub const FUNCTION_PARAMS_MAX: usize = 32;

const PYTHON_KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// A Python identifier made of ASCII letters, digits and underscores (function and parameter
/// names): 1–64 characters, not starting with a digit, not a keyword.
pub fn python_name(field: &'static str, what: &str, name: &str) -> Result<()> {
    let ok_chars = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_chars || name.as_bytes()[0].is_ascii_digit() {
        return Err(Error::invalid(
            field,
            format!(
                "{what} '{}' must be 1 to 64 letters, digits and underscores, not starting with a digit",
                name.escape_default()
            ),
        ));
    }
    if PYTHON_KEYWORDS.contains(&name) {
        return Err(Error::invalid(field, format!("{what} '{name}' is a Python keyword; choose another name")));
    }
    Ok(())
}

/// Checks that `id` looks like an id with the given prefix (`agt_`, `sec_`, ...). Used to give
/// a precise error for a malformed id instead of a generic "not found".
pub fn id_with_prefix(field: &'static str, prefix: &str, id: &str) -> Result<()> {
    let ok = id.len() > prefix.len()
        && id.len() <= 64
        && id.starts_with(prefix)
        && id[prefix.len()..].bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("'{}' is not a valid id; ids look like {prefix}…", id.escape_default())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_follow_the_rule() {
        for ok in ["a", "stripe_api_key", "booking_service_oauth", "k8s_token_2", &"a".repeat(64)] {
            assert!(secret_name(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", "Stripe", "1abc", "_abc", "has-dash", "has space", "ümlaut", &"a".repeat(65), "a.b"] {
            let err = secret_name(bad).unwrap_err();
            assert_eq!(err.code, "invalid_input", "{bad}");
            assert_eq!(err.field.as_deref(), Some("name"));
        }
    }

    #[test]
    fn description_limit_counts_characters() {
        assert!(description(&"é".repeat(1000)).is_ok());
        assert!(description(&"e".repeat(1001)).is_err());
    }

    #[test]
    fn descriptions_keep_line_breaks_and_tabs_but_no_other_control_character() {
        assert!(description("first line\r\nsecond\tcolumn").is_ok());
        for bad in ["k\u{0}", "\u{7}bell", "esc\u{1b}[0m", "c1\u{85}"] {
            let e = description(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("description"), "{bad:?}");
        }
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(display_name("name", "  Support bot ").unwrap(), "Support bot");
        assert!(display_name("name", "   ").is_err());
        assert!(display_name("name", "a\u{0}b").is_err());
        assert!(display_name("name", &"x".repeat(101)).is_err());
    }

    #[test]
    fn kv_keys_follow_the_rule() {
        for ok in ["client_id", "Client.Secret-2", &"k".repeat(128)] {
            assert!(kv_key(ok).is_ok());
        }
        for bad in ["", "has space", "slash/y", &"k".repeat(129)] {
            assert!(kv_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_and_passwords() {
        assert_eq!(email("  Ada@Example.com ").unwrap(), "Ada@Example.com");
        // The limit counts characters: 254 of them, of two bytes each, are accepted; 255 are not.
        let long = format!("{}@b\u{e9}.example", "\u{e9}".repeat(EMAIL_MAX - 11));
        assert_eq!(long.chars().count(), EMAIL_MAX);
        assert!(email(&long).is_ok());
        let err = email(&format!("\u{e9}{long}")).unwrap_err();
        assert!(err.message.contains("255 characters"), "{}", err.message);
        for bad in
            ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "ada@@example.com", "ada@example."]
        {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(password("password", "correct horse battery", "ada@example.com").is_ok());
        for (bad, why) in [
            ("Xq7z", "too short"),
            ("aaaaaaaaaaaaaaaa", "too few"),
            ("my-password-is-long", "commonly used"),
            ("AdaLovelace@Example.com", "email"),
            ("xx-adalovelace-xx", "email"),
        ] {
            let err = password("password", bad, "adalovelace@example.com").unwrap_err();
            assert!(
                err.message.contains(why) || why == "email" && err.message.contains("email"),
                "{bad}: {}",
                err.message
            );
            assert!(!err.message.contains(bad), "the password is not echoed");
        }
    }

    #[test]
    fn ids_need_their_prefix() {
        assert!(id_with_prefix("agent", "agt_", "agt_abc123").is_ok());
        assert!(id_with_prefix("agent", "agt_", "sec_abc123").is_err());
        assert!(id_with_prefix("agent", "agt_", "agt_").is_err());
        assert!(id_with_prefix("agent", "agt_", "agt_../x").is_err());
    }
}
