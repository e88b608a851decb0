//! What the egress proxy allows: addresses no function may reach unless the operator opened
//! them, agents' host allowlists, and the operator's `--egress-allow` destinations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use agentvault_core::model::{EgressMode, EgressPolicy};
use agentvault_core::{Error, Result};

/// Ports a function may reach by default.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];
/// Hosts an allowlist may hold.
pub const MAX_HOSTS: usize = 100;

/// Why an address is refused, or None when it is a public unicast address.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return refused_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Some("a private (unique local) address")
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if (seg[0] & 0xffc0) == 0xfec0 {
                Some("a site-local address")
            } else if seg[0] == 0 && seg[1..6] == [0, 0, 0, 0, 0] {
                // IPv4-compatible (::a.b.c.d) and other addresses under ::/80.
                Some("a reserved address")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("a documentation address")
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() || a == 0 {
        Some("the unspecified address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a carrier-grade NAT address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() || a >= 240 || (a == 192 && b == 0 && ip.octets()[2] == 0) {
        Some("a reserved address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else if ip.is_documentation() {
        Some("a documentation address")
    } else {
        None
    }
}

/// A destination the operator opened with `--egress-allow host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorAllow {
    pub host: String,
    pub port: u16,
}

impl OperatorAllow {
    pub fn parse(text: &str) -> std::result::Result<OperatorAllow, String> {
        let bad = || format!("egress allow '{text}' is not host:port, such as 10.0.0.5:8080 or api.internal:443");
        let (host, port) = split_host_port(text.trim()).ok_or_else(bad)?;
        let port = port.ok_or_else(bad)?;
        check_host(&host).map_err(|_| bad())?;
        Ok(OperatorAllow { host, port })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, lowercased, without the brackets.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse::<u16>().ok().filter(|p| *p > 0)?),
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_ascii_lowercase(), Some(port.parse::<u16>().ok().filter(|p| *p > 0)?)))
        }
        Some(_) => text.parse::<Ipv6Addr>().ok().map(|_| (text.to_ascii_lowercase(), None)),
        None => Some((text.to_ascii_lowercase(), None)),
    }
}

/// A host name (letters, digits, hyphens, dots) or an IP address.
fn check_host(host: &str) -> std::result::Result<(), ()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok { Ok(()) } else { Err(()) }
}

/// One entry of an agent's allowlist: `api.stripe.com`, `*.googleapis.com` (any subdomain,
/// not the domain itself), optionally with `:port` (else ports 80 and 443).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// Lowercase; for a wildcard, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostRule {
    pub fn parse(text: &str) -> std::result::Result<HostRule, String> {
        let bad = |why: &str| {
            format!(
                "host '{}' {why}; write a host name such as api.stripe.com or *.googleapis.com, optionally with :port",
                text.escape_default()
            )
        };
        let (host, port) = split_host_port(text.trim()).ok_or_else(|| bad("is not a host or host:port"))?;
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (host, false),
        };
        check_host(&host).map_err(|_| bad("is not a valid host name"))?;
        if wildcard && (host.parse::<IpAddr>().is_ok() || !host.contains('.')) {
            return Err(bad("is too broad a wildcard"));
        }
        Ok(HostRule { host, wildcard, port })
    }

    /// The rule as stored and shown.
    pub fn canonical(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let host = if self.wildcard { format!("*.{host}") } else { host };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        let host_ok = if self.wildcard {
            host.strip_suffix(self.host.as_str()).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.host
        };
        port_ok && host_ok
    }
}

/// Validates an agent's policy as given to the API: returns it with its hosts in canonical form.
pub fn checked_policy(mode: &str, hosts: &[String], now: i64) -> Result<EgressPolicy> {
    let mode = EgressMode::parse(mode).ok_or_else(|| {
        Error::invalid("mode", format!("mode is '{}'; it must be default, allowlist or none", mode.escape_default()))
    })?;
    if mode != EgressMode::Allowlist && !hosts.is_empty() {
        return Err(unfit("hosts are given only with mode allowlist"));
    }
    if mode == EgressMode::Allowlist && hosts.is_empty() {
        return Err(unfit("an allowlist needs at least one host; to refuse every connection, use mode none"));
    }
    if hosts.len() > MAX_HOSTS {
        return Err(unfit(format!("{} hosts given; the limit is {MAX_HOSTS}", hosts.len())));
    }
    let mut canonical: Vec<String> = Vec::with_capacity(hosts.len());
    for h in hosts {
        let rule = HostRule::parse(h).map_err(unfit)?;
        let c = rule.canonical();
        if !canonical.contains(&c) {
            canonical.push(c);
        }
    }
    Ok(EgressPolicy { mode, hosts: canonical, updated_at: now })
}

/// A policy whose parts do not fit together, or a host that is not one: 422.
fn unfit(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::unprocessable("invalid_egress_policy", message).with_field("hosts")
}

/// The fixed part of the decision: the operator's settings and agentvault's own addresses.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub allow: Vec<OperatorAllow>,
    /// Where agentvault listens: never reachable from a function.
    pub own: Vec<SocketAddr>,
}

/// A refusal: a stable code for the audit log and metrics, and a sentence for the function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// Codes of refusals (the metric's label values).
pub const REFUSAL_CODES: [&str; 8] =
    ["no_network", "not_allowlisted", "port", "address", "agentvault", "resolve", "bad_request", "injection_host"];

fn refuse(code: &'static str, message: String) -> Refusal {
    Refusal { code, message }
}

impl Rules {
    fn operator_allows(&self, host: &str, port: u16) -> bool {
        self.allow.iter().any(|a| a.host == host && a.port == port)
    }

    /// Whether the agent's policy lets it ask for `host:port` at all (before resolving).
    pub fn check_host(&self, policy: &EgressPolicy, host: &str, port: u16) -> std::result::Result<(), Refusal> {
        match policy.mode {
            EgressMode::None => Err(refuse("no_network", "this agent's functions have no network access".into())),
            EgressMode::Allowlist => {
                let listed = policy.hosts.iter().filter_map(|h| HostRule::parse(h).ok()).any(|r| r.matches(host, port));
                if listed {
                    Ok(())
                } else {
                    Err(refuse("not_allowlisted", format!("{host}:{port} is not on this agent's egress allowlist")))
                }
            }
            EgressMode::Default => Ok(()),
        }
    }

    /// Whether the addresses `host` resolved to may be connected to: every one of them must be.
    /// `listed`: the host is on the agent's allowlist (which names its ports).
    pub fn check_addresses(
        &self,
        policy: &EgressPolicy,
        host: &str,
        port: u16,
        addrs: &[SocketAddr],
    ) -> std::result::Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(refuse("resolve", format!("{host} has no address")));
        }
        if let Some(a) = addrs.iter().find(|a| self.is_own(a)) {
            return Err(refuse("agentvault", format!("{host}:{port} ({a}) is agentvault itself")));
        }
        let opened = self.operator_allows(host, port);
        if policy.mode == EgressMode::Default && !DEFAULT_PORTS.contains(&port) && !opened {
            return Err(refuse("port", format!("port {port} is closed; functions may connect to ports 80 and 443")));
        }
        for a in addrs {
            if let Some(why) = refused_address(a.ip()).filter(|_| !opened) {
                let shown =
                    if host.parse::<IpAddr>().is_ok() { host.to_owned() } else { format!("{host} ({})", a.ip()) };
                return Err(refuse("address", format!("{shown} is {why}")));
            }
        }
        Ok(())
    }

    fn is_own(&self, a: &SocketAddr) -> bool {
        let ip = canonical_ip(a.ip());
        self.own.iter().any(|o| o.port() == a.port() && (o.ip().is_unspecified() || canonical_ip(o.ip()) == ip))
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Splits a CONNECT authority or a URI's host and port (the port defaults to `default_port`).
pub fn authority(text: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = split_host_port(text)?;
    check_host(&host).ok()?;
    Some((host, port.unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_outside_the_public_internet_are_refused() {
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(refused_address(ip(refused)).is_some(), "{refused} should be refused");
        }
        for public in ["1.1.1.1", "93.184.216.34", "100.128.0.1", "2606:4700::1111", "64:ff9b::101:101"] {
            assert_eq!(refused_address(ip(public)), None, "{public} is public");
        }
        assert_eq!(refused_address(ip("169.254.169.254")), Some("a link-local address (cloud metadata lives there)"));
    }

    #[test]
    fn host_rules_match_hosts_and_ports() {
        let r = HostRule::parse("API.Stripe.com").unwrap();
        assert!(r.matches("api.stripe.com", 443) && r.matches("api.stripe.com", 80));
        assert!(!r.matches("api.stripe.com", 8443) && !r.matches("evil.api.stripe.com", 443));
        let w = HostRule::parse("*.googleapis.com").unwrap();
        assert!(w.matches("storage.googleapis.com", 443) && w.matches("a.b.googleapis.com", 443));
        assert!(!w.matches("googleapis.com", 443) && !w.matches("evilgoogleapis.com", 443));
        let p = HostRule::parse("127.0.0.1:8080").unwrap();
        assert!(p.matches("127.0.0.1", 8080) && !p.matches("127.0.0.1", 443));
        assert_eq!(HostRule::parse("[::1]:8080").unwrap().canonical(), "[::1]:8080");
        assert_eq!(w.canonical(), "*.googleapis.com");
        for bad in ["", "*", "*.com", "a b", "http://x.com", "x.com:0", "x.com:99999", "*.1.2.3.4", "-x.com", "[::1"] {
            assert!(HostRule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn operator_allows_open_private_destinations_and_ports() {
        let rules = Rules {
            allow: vec![OperatorAllow::parse("127.0.0.1:9999").unwrap()],
            own: vec!["127.0.0.1:8437".parse().unwrap()],
        };
        let default = EgressPolicy::default();
        let lo: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert!(rules.check_host(&default, "127.0.0.1", 9999).is_ok());
        assert!(rules.check_addresses(&default, "127.0.0.1", 9999, &[lo]).is_ok());
        let closed: SocketAddr = "93.184.216.34:9998".parse().unwrap();
        assert_eq!(rules.check_addresses(&default, "example.com", 9998, &[closed]).unwrap_err().code, "port");
        let other: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(rules.check_addresses(&default, "127.0.0.1", 443, &[other]).unwrap_err().code, "address");
        let own: SocketAddr = "127.0.0.1:8437".parse().unwrap();
        assert_eq!(rules.check_addresses(&default, "127.0.0.1", 8437, &[own]).unwrap_err().code, "agentvault");
        // A name that resolves to a private address is refused (DNS rebinding), on any of its addresses.
        let mixed = ["93.184.216.34:443".parse().unwrap(), "10.0.0.1:443".parse().unwrap()];
        assert_eq!(rules.check_addresses(&default, "rebind.example", 443, &mixed).unwrap_err().code, "address");
        // An allowlisted host with its own port still may not be private unless the operator opened it.
        let listed = checked_policy("allowlist", &["intranet.example:8080".into()], 1).unwrap();
        assert!(rules.check_host(&listed, "intranet.example", 8080).is_ok());
        let private: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        assert_eq!(rules.check_addresses(&listed, "intranet.example", 8080, &[private]).unwrap_err().code, "address");
        assert!(OperatorAllow::parse("127.0.0.1").is_err());
        assert_eq!(OperatorAllow::parse("[::1]:80").unwrap(), OperatorAllow { host: "::1".into(), port: 80 });
    }

    #[test]
    fn policies_are_checked() {
        assert_eq!(checked_policy("none", &[], 1).unwrap().mode, EgressMode::None);
        assert!(checked_policy("allowlist", &[], 1).is_err());
        assert!(checked_policy("default", &["a.com".into()], 1).is_err());
        assert!(checked_policy("open", &[], 1).is_err());
        let p = checked_policy("allowlist", &["A.com".into(), "a.com".into(), "*.b.com:8443".into()], 1).unwrap();
        assert_eq!(p.hosts, ["a.com", "*.b.com:8443"]);
        let rules = Rules::default();
        assert!(rules.check_host(&p, "a.com", 443).is_ok());
        assert_eq!(rules.check_host(&p, "c.com", 443).unwrap_err().code, "not_allowlisted");
        assert!(rules.check_host(&p, "x.b.com", 8443).is_ok());
        let none = checked_policy("none", &[], 1).unwrap();
        assert_eq!(rules.check_host(&none, "a.com", 443).unwrap_err().code, "no_network");
    }
}
