//! HTTPS with `--tls-cert`/`--tls-key` (here through their environment variables).

use std::process::Command;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, DataDir, Options, Server, setup_code};

fn curl(args: &[&str]) -> (bool, String) {
    let out =
        Command::new("curl").args(["-sS", "-i", "--max-time", "10"]).args(args).output().expect("curl is installed");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn serves_https_with_secure_cookies() {
    let data = DataDir::new();
    let cert = data.beside("cert.pem");
    let key = data.beside("key.pem");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let env =
        vec![("AGENTVAULT_TLS_CERT", cert.display().to_string()), ("AGENTVAULT_TLS_KEY", key.display().to_string())];
    let s = data.start_with(Options { extra_env: env, ..data.opts() });
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let cacert = cert.display().to_string();
    let (ok, out) = curl(&["--cacert", &cacert, &format!("{}/healthz", s.base)]);
    assert!(ok && out.contains("200") && out.contains("ok"), "{out}");

    // Set up the first admin over HTTPS, then sign in: the cookie is Secure.
    let code = setup_code(&s);
    let body = format!(r#"{{"setup_code":"{code}","email":"{ADMIN_EMAIL}","password":"{ADMIN_PASSWORD}"}}"#);
    let (ok, out) = curl(&[
        "--cacert",
        &cacert,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("{}/api/v1/setup", s.base),
    ]);
    assert!(ok && out.contains("201"), "{out}");
    let cookie_line = out.lines().find(|l| l.to_lowercase().starts_with("set-cookie")).unwrap();
    assert!(cookie_line.contains("Secure") && cookie_line.contains("HttpOnly"), "{cookie_line}");

    // Plain HTTP on the HTTPS port gets no answer; an untrusted certificate is refused by the client.
    let (ok, _) = curl(&[&format!("{}/healthz", s.base.replace("https://", "http://"))]);
    assert!(!ok);
    let (ok, _) = curl(&[&format!("{}/healthz", s.base)]);
    assert!(!ok, "curl refuses the self-signed certificate without --cacert");
    drop(s);

    // A missing key file stops the start with a clear message.
    let bad = vec![
        ("AGENTVAULT_TLS_CERT", cert.display().to_string()),
        ("AGENTVAULT_TLS_KEY", data.beside("missing.pem").display().to_string()),
    ];
    let err =
        Server::try_start_in(&data.beside("data2"), &data.token, Options { extra_env: bad, ..Options::default() })
            .err()
            .unwrap();
    assert!(err.contains("cannot use the TLS certificate"), "{err}");
}
