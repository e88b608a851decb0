//! Credential injection: a secret marked *injected only* reaches a function as a placeholder, and
//! the egress proxy swaps in the value in the headers of requests to that secret's hosts.
//!
//! HTTPS to such a host is terminated by the proxy with a certificate of agentvault's own egress
//! CA (trusted only inside the sandbox) and sent on over the proxy's own verified TLS
//! connection. The CA is made at first start; its private key is sealed under the root key like a
//! secret value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agentvault_core::model::{Binding, Sealed};
use agentvault_core::{Error, Result, SecretValue};
use agentvault_crypto::Keyring;
use agentvault_store::Store;
use base64::Engine;
use hyper::header::{HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use super::policy::HostRule;

/// Where the egress CA's key is bound when sealed (it belongs to no workspace).
pub const CA_BINDING: Binding<'static> = Binding { workspace_id: "_agentvault", secret_id: "egress_ca", version: 1 };
/// Host certificates kept.
const LEAVES_KEPT: usize = 1024;
/// The prefix of every placeholder.
const PLACEHOLDER_PREFIX: &str = "avinj_";

/// One value a function may use but not see.
pub struct Injection {
    /// The secret's name (and for a key/value secret, the key), for the audit log.
    pub secret: String,
    pub key: Option<String>,
    pub placeholder: String,
    value: Zeroizing<String>,
    hosts: Vec<HostRule>,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Injection({}, [redacted])", self.secret)
    }
}

impl Injection {
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }
}

/// The injections of the invocations running now, by invocation id, and the connections the
/// proxy refused them (shown in the invocation's logs).
#[derive(Default)]
pub struct Injections {
    by_invocation: Mutex<HashMap<String, Vec<Arc<Injection>>>>,
    refusals: Mutex<HashMap<String, Vec<String>>>,
}

/// Refusals kept per invocation for its logs.
const REFUSALS_KEPT: usize = 20;

fn placeholder() -> Result<String> {
    let bytes = agentvault_crypto::random_bytes::<16>().map_err(Error::internal)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{PLACEHOLDER_PREFIX}{hex}"))
}

impl Injections {
    /// Registers `value` of secret `name` for the invocation; returns what the function gets
    /// instead: a placeholder, or a placeholder per key.
    pub fn register(&self, invocation: &str, name: &str, value: &SecretValue, hosts: &[String]) -> Result<SecretValue> {
        let rules: Vec<HostRule> = hosts.iter().filter_map(|h| HostRule::parse(h).ok()).collect();
        let mut made = Vec::new();
        let shown = match value {
            SecretValue::Single(v) => {
                let p = placeholder()?;
                made.push(Injection {
                    secret: name.to_owned(),
                    key: None,
                    placeholder: p.clone(),
                    value: Zeroizing::new(v.clone()),
                    hosts: rules.clone(),
                });
                SecretValue::Single(p)
            }
            SecretValue::Kv(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let p = placeholder()?;
                    made.push(Injection {
                        secret: name.to_owned(),
                        key: Some(k.clone()),
                        placeholder: p.clone(),
                        value: Zeroizing::new(v.clone()),
                        hosts: rules.clone(),
                    });
                    out.push((k.clone(), p));
                }
                SecretValue::Kv(out)
            }
        };
        let mut map = self.by_invocation.lock().map_err(|_| Error::internal("the injections are poisoned"))?;
        map.entry(invocation.to_owned()).or_default().extend(made.into_iter().map(Arc::new));
        Ok(shown)
    }

    pub fn of(&self, invocation: &str) -> Vec<Arc<Injection>> {
        self.by_invocation.lock().ok().and_then(|m| m.get(invocation).cloned()).unwrap_or_default()
    }

    /// Notes a connection the proxy refused during an invocation.
    pub fn refused(&self, invocation: &str, message: String) {
        if let Ok(mut m) = self.refusals.lock() {
            let list = m.entry(invocation.to_owned()).or_default();
            if list.len() < REFUSALS_KEPT {
                list.push(message);
            }
        }
    }

    /// Forgets an invocation's placeholders (they are worth nothing once it has ended); returns
    /// the connections refused during it.
    pub fn end(&self, invocation: &str) -> Vec<String> {
        if let Ok(mut m) = self.by_invocation.lock() {
            m.remove(invocation);
        }
        self.refusals.lock().ok().and_then(|mut m| m.remove(invocation)).unwrap_or_default()
    }
}

/// What swapping did to a request's headers.
#[derive(Debug, Default)]
pub struct Swapped {
    /// The injections swapped in: (secret, header name).
    pub injected: Vec<(String, String)>,
    /// A placeholder of a secret that may not be sent to this host: (secret, header name).
    pub refused: Option<(String, String)>,
}

/// Swaps placeholders for values in `headers`, for the injections that allow `host:port`; a
/// placeholder of one that does not allow it refuses the whole request (nothing is swapped).
/// Basic credentials (`Authorization: Basic base64(user:pass)`) are decoded, swapped and
/// encoded again.
pub fn swap_headers(headers: &mut HeaderMap, injections: &[Arc<Injection>], host: &str, port: u16) -> Swapped {
    let mut out = Swapped::default();
    if injections.is_empty() {
        return out;
    }
    let mut changes: Vec<(hyper::header::HeaderName, usize, Zeroizing<String>)> = Vec::new();
    for name in headers.keys() {
        for (i, value) in headers.get_all(name).iter().enumerate() {
            let Ok(text) = value.to_str() else { continue };
            let (basic, plain) = match text.strip_prefix("Basic ").or_else(|| text.strip_prefix("basic ")) {
                Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                    Ok(bytes) => (true, Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned())),
                    Err(_) => (false, Zeroizing::new(text.to_owned())),
                },
                None => (false, Zeroizing::new(text.to_owned())),
            };
            if !plain.contains(PLACEHOLDER_PREFIX) {
                continue;
            }
            let mut swapped = Zeroizing::new((*plain).clone());
            for inj in injections {
                if !swapped.contains(inj.placeholder.as_str()) {
                    continue;
                }
                if !inj.allows(host, port) {
                    out.refused = Some((inj.secret.clone(), name.as_str().to_owned()));
                    return out;
                }
                swapped = Zeroizing::new(swapped.replace(inj.placeholder.as_str(), inj.value.as_str()));
                out.injected.push((inj.secret.clone(), name.as_str().to_owned()));
            }
            if *swapped != *plain {
                let text = if basic {
                    Zeroizing::new(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(swapped.as_bytes())
                    ))
                } else {
                    swapped
                };
                changes.push((name.clone(), i, text));
            }
        }
    }
    for (name, index, text) in changes {
        let Ok(mut v) = HeaderValue::from_str(&text) else {
            out.refused = Some(("(a value that is not a valid header)".into(), name.as_str().to_owned()));
            return out;
        };
        v.set_sensitive(true);
        let mut all: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if let Some(slot) = all.get_mut(index) {
            *slot = v;
        }
        headers.remove(&name);
        for value in all {
            headers.append(name.clone(), value);
        }
    }
    out
}

/// agentvault's egress CA and the TLS settings of intercepted connections.
pub struct EgressTls {
    /// The CA certificate, PEM: what the sandbox trusts besides the system's roots.
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// One key for every host certificate (made at start, never stored).
    leaf_key: rcgen::KeyPair,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    pub client: Arc<rustls::ClientConfig>,
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "agentvault egress CA");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "agentvault");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl EgressTls {
    /// Loads the egress CA, or makes and stores it on first start; trusts the system's roots and
    /// `extra_cas` upstream.
    pub async fn load(store: &dyn Store, keyring: &Keyring, extra_cas: &[PathBuf]) -> Result<EgressTls> {
        let (cert_pem, key) = match store.get_egress_ca().await? {
            Some((pem, sealed)) => match keyring.open(CA_BINDING, &sealed) {
                Ok(key_pem) => {
                    let text =
                        std::str::from_utf8(&key_pem).map_err(|_| Error::internal("the egress CA key is not PEM"))?;
                    let key = rcgen::KeyPair::from_pem(text)
                        .map_err(|e| Error::internal(format!("the egress CA key cannot be read: {e}")))?;
                    (pem, key)
                }
                Err(e) => {
                    return Err(Error::unavailable(format!(
                        "the egress CA's key cannot be opened with the configured root keys ({e}); is the root key \
                         the one this data directory was created with?"
                    )));
                }
            },
            None => {
                let key = rcgen::KeyPair::generate().map_err(|e| Error::internal(format!("egress CA key: {e}")))?;
                let cert = ca_params()
                    .self_signed(&key)
                    .map_err(|e| Error::internal(format!("egress CA certificate: {e}")))?;
                let key_pem = Zeroizing::new(key.serialize_pem());
                let sealed: Sealed = keyring
                    .seal(CA_BINDING, key_pem.as_bytes())
                    .map_err(|e| Error::internal(format!("sealing the egress CA key: {e}")))?;
                let (pem, sealed) = store.create_egress_ca(&cert.pem(), &sealed, crate::now_millis()).await?;
                // Another replica may have stored its CA first: use the stored one.
                let stored = keyring
                    .open(CA_BINDING, &sealed)
                    .map_err(|e| Error::internal(format!("opening the egress CA key: {e}")))?;
                let text = std::str::from_utf8(&stored).map_err(|_| Error::internal("the egress CA key is not PEM"))?;
                let key = rcgen::KeyPair::from_pem(text)
                    .map_err(|e| Error::internal(format!("the egress CA key cannot be read: {e}")))?;
                tracing::info!("made agentvault's egress CA (functions trust it for injected credentials)");
                (pem, key)
            }
        };
        let issuer = rcgen::Issuer::new(ca_params(), key);
        let leaf_key = rcgen::KeyPair::generate().map_err(|e| Error::internal(format!("egress host key: {e}")))?;
        let client = client_config(extra_cas)?;
        Ok(EgressTls { ca_pem: cert_pem, issuer, leaf_key, leaves: Mutex::new(HashMap::new()), client })
    }

    /// The TLS settings that present a certificate for `host`, signed by the egress CA.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>> {
        if let Some(c) = self.leaves.lock().ok().and_then(|l| l.get(host).cloned()) {
            return Ok(c);
        }
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, host);
        params.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                host.to_owned().try_into().map_err(|_| Error::internal(format!("{host} is not a DNS name")))?,
            ),
        }];
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| Error::internal(format!("certificate for {host}: {e}")))?;
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.leaf_key.serialize_der())
            .map_err(|e| Error::internal(format!("host key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .map_err(|e| Error::internal(format!("TLS settings for {host}: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if let Ok(mut l) = self.leaves.lock() {
            // Wildcard hosts could name any number of subdomains: the cache stays small.
            if l.len() >= LEAVES_KEPT {
                l.clear();
            }
            l.insert(host.to_owned(), config.clone());
        }
        Ok(config)
    }
}

/// The system's root certificates (the usual bundle files) and the operator's extra CAs.
fn client_config(extra_cas: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let system = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];
    if let Some(bundle) = system.iter().find(|p| std::path::Path::new(p).is_file()) {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(bundle).map(|i| i.filter_map(|c| c.ok()).collect()).unwrap_or_default();
        roots.add_parsable_certificates(certs);
    }
    for path in extra_cas {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| Error::unavailable(format!("cannot read the egress CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::unavailable(format!("the egress CA file {} holds no certificate", path.display())));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| Error::unavailable(format!("the egress CA file {} is not usable: {e}", path.display())))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injections() -> (Injections, String) {
        let inj = Injections::default();
        let shown = inj
            .register("inv_1", "stripe_api_key", &SecretValue::Single("sk_live_X".into()), &["api.stripe.com".into()])
            .unwrap();
        let SecretValue::Single(p) = &shown else { panic!("a single value gives one placeholder") };
        (inj, p.clone())
    }

    #[test]
    fn placeholders_are_swapped_toward_allowed_hosts_only() {
        let (inj, p) = injections();
        assert!(p.starts_with(PLACEHOLDER_PREFIX) && !p.contains("sk_live"));
        let list = inj.of("inv_1");
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(&format!("Bearer {p}")).unwrap());
        h.append("x-other", HeaderValue::from_static("keep"));
        let done = swap_headers(&mut h, &list, "api.stripe.com", 443);
        assert_eq!(done.injected, vec![("stripe_api_key".to_owned(), "authorization".to_owned())]);
        assert_eq!(h["authorization"], "Bearer sk_live_X");
        assert_eq!(h["x-other"], "keep");

        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(&format!("Bearer {p}")).unwrap());
        let done = swap_headers(&mut h, &list, "evil.example", 443);
        assert_eq!(done.refused, Some(("stripe_api_key".to_owned(), "authorization".to_owned())));
        assert_eq!(h["authorization"], format!("Bearer {p}").as_str(), "nothing is swapped");
    }

    #[test]
    fn basic_credentials_are_decoded_and_encoded_again() {
        let (inj, p) = injections();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(&format!("Basic {}", b64(&format!("acct:{p}")))).unwrap());
        swap_headers(&mut h, &inj.of("inv_1"), "api.stripe.com", 443);
        assert_eq!(h["authorization"], format!("Basic {}", b64("acct:sk_live_X")).as_str());
    }

    #[test]
    fn placeholders_end_with_their_invocation() {
        let (inj, p) = injections();
        inj.refused("inv_1", "refused once".into());
        assert_eq!(inj.end("inv_1"), vec!["refused once".to_owned()]);
        assert!(inj.of("inv_1").is_empty());
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(&format!("Bearer {p}")).unwrap());
        let done = swap_headers(&mut h, &inj.of("inv_1"), "api.stripe.com", 443);
        assert!(done.injected.is_empty() && done.refused.is_none());
        let kv = inj
            .register(
                "inv_2",
                "oauth",
                &SecretValue::Kv(vec![("id".into(), "a".into()), ("secret".into(), "b".into())]),
                &[],
            )
            .unwrap();
        let SecretValue::Kv(pairs) = &kv else { panic!("pairs give pairs") };
        assert_eq!(pairs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["id", "secret"]);
        assert!(pairs.iter().all(|(_, v)| v.starts_with(PLACEHOLDER_PREFIX)));
        assert!(format!("{:?}", inj.of("inv_2")[0]).contains("[redacted]"));
    }
}
