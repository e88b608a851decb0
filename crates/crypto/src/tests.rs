//! Barrier tests in the spirit of HashiCorp Vault's: what is stored reveals nothing, and any
//! change to it, or any move of it, fails to open.

use super::*;

const WS: &str = "ws_one";
const SEC: &str = "sec_one";

fn binding(version: u32) -> Binding<'static> {
    Binding { workspace_id: WS, secret_id: SEC, version }
}

#[test]
fn stored_bytes_differ_from_plaintext() {
    let ring = Keyring::generate().unwrap();
    let plaintext = b"sk_live_0123456789abcdef";
    let sealed = ring.seal(binding(1), plaintext).unwrap();
    assert!(!sealed.ciphertext.windows(plaintext.len()).any(|w| w == plaintext));
    assert!(!sealed.wrapped_dek.windows(8).any(|w| plaintext.windows(8).any(|p| p == w)));
    assert_eq!(&ring.open(binding(1), &sealed).unwrap()[..], plaintext);
}

#[test]
fn same_plaintext_sealed_twice_differs() {
    let ring = Keyring::generate().unwrap();
    let a = ring.seal(binding(1), b"same").unwrap();
    let b = ring.seal(binding(1), b"same").unwrap();
    assert_ne!(a.ciphertext, b.ciphertext);
    assert_ne!(a.wrapped_dek, b.wrapped_dek);
}

#[test]
fn a_flipped_byte_fails_to_open() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(binding(1), b"hello world").unwrap();
    for i in 0..sealed.ciphertext.len() {
        let mut bad = sealed.clone();
        bad.ciphertext[i] ^= 0x01;
        assert_eq!(ring.open(binding(1), &bad).unwrap_err(), CryptoError::OpenFailed, "ciphertext byte {i}");
    }
    for i in 0..sealed.wrapped_dek.len() {
        let mut bad = sealed.clone();
        bad.wrapped_dek[i] ^= 0x80;
        assert_eq!(ring.open(binding(1), &bad).unwrap_err(), CryptoError::OpenFailed, "dek byte {i}");
    }
    let mut short = sealed.clone();
    short.ciphertext.truncate(10);
    assert!(ring.open(binding(1), &short).is_err());
}

#[test]
fn a_moved_ciphertext_fails_to_open() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(binding(1), b"value").unwrap();
    for other in [
        Binding { workspace_id: "ws_two", secret_id: SEC, version: 1 },
        Binding { workspace_id: WS, secret_id: "sec_two", version: 1 },
        Binding { workspace_id: WS, secret_id: SEC, version: 2 },
        // Field boundaries are length-prefixed, so shifting characters between fields fails too.
        Binding { workspace_id: "ws_on", secret_id: "esec_one", version: 1 },
    ] {
        assert_eq!(ring.open(other, &sealed).unwrap_err(), CryptoError::OpenFailed, "{other:?}");
    }
    // Swapping the value ciphertext of one version into another fails even with a valid DEK.
    let v2 = ring.seal(binding(2), b"value two").unwrap();
    let franken = Sealed { ciphertext: sealed.ciphertext.clone(), ..v2 };
    assert!(ring.open(binding(2), &franken).is_err());
}

#[test]
fn a_wrong_length_key_is_refused() {
    for n in [0usize, 16, 31, 33, 64] {
        let key = vec![7u8; n];
        assert_eq!(Keyring::from_raw_keys(&[&key]).unwrap_err(), CryptoError::WrongKeyLength(n));
    }
    assert_eq!(Keyring::parse("c2hvcnQ=").unwrap_err(), CryptoError::WrongKeyLength(5));
    assert_eq!(Keyring::parse("not base64!!").unwrap_err(), CryptoError::BadKeyEncoding);
    assert_eq!(Keyring::parse("# only a comment\n").unwrap_err(), CryptoError::EmptyKeyring);
}

#[test]
fn another_keyring_cannot_open() {
    let a = Keyring::generate().unwrap();
    let b = Keyring::generate().unwrap();
    let sealed = a.seal(binding(1), b"value").unwrap();
    assert!(matches!(b.open(binding(1), &sealed), Err(CryptoError::UnknownRootKey(_))));
    // Even when the id is forged to match, the wrong key fails to authenticate.
    let forged = Sealed { root_key_id: b.active_id().to_owned(), ..sealed };
    assert_eq!(b.open(binding(1), &forged).unwrap_err(), CryptoError::OpenFailed);
}

#[test]
fn rotation_keeps_every_value_readable() {
    let old = Keyring::generate().unwrap();
    let values: Vec<(u32, Vec<u8>)> = (1..=20).map(|v| (v, format!("value-{v}").into_bytes())).collect();
    let sealed: Vec<Sealed> = values.iter().map(|(v, p)| old.seal(binding(*v), p).unwrap()).collect();

    let rotated = old.with_new_active_key().unwrap();
    assert_ne!(rotated.active_id(), old.active_id());
    assert!(rotated.contains(old.active_id()));
    let rewrapped: Vec<Sealed> =
        sealed.iter().zip(&values).map(|(s, (v, _))| rotated.rewrap(binding(*v), s).unwrap()).collect();

    let new_only = rotated.active_only().unwrap();
    assert_eq!(new_only.ids(), vec![rotated.active_id()]);
    for ((s, r), (v, p)) in sealed.iter().zip(&rewrapped).zip(&values) {
        assert_eq!(r.ciphertext, s.ciphertext, "values are not re-encrypted");
        assert_eq!(r.root_key_id, new_only.active_id());
        assert_eq!(&new_only.open(binding(*v), r).unwrap()[..], &p[..]);
        // The retired key is gone: the old wrapping no longer opens.
        assert!(new_only.open(binding(*v), s).is_err());
    }
}

#[test]
fn key_files_round_trip_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.key");
    let ring = Keyring::generate().unwrap().with_new_active_key().unwrap();
    ring.write_file(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (loaded, warning) = Keyring::load_file(&path).unwrap();
    assert!(warning.is_none());
    assert_eq!(loaded.ids(), ring.ids());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Keyring::load_file(&path).unwrap().1.is_some());
}

#[test]
fn debug_shows_no_key_material() {
    let key = [0x41u8; 32];
    let ring = Keyring::from_raw_keys(&[&key]).unwrap();
    let dbg = format!("{ring:?}");
    assert!(dbg.contains("rk_"));
    assert!(!dbg.contains("AAAA") && !dbg.contains("65, 65"));
}

#[test]
fn constant_time_eq_compares() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[test]
fn a_data_key_opens_its_value_again_and_only_for_its_binding() {
    let ring = Keyring::generate().unwrap();
    let sealed = ring.seal(binding(3), b"kept key").unwrap();
    let key = ring.data_key(binding(3), &sealed).unwrap();
    for _ in 0..2 {
        assert_eq!(&key.open(binding(3), &sealed).unwrap()[..], b"kept key");
    }
    assert_eq!(key.open(binding(4), &sealed).unwrap_err(), CryptoError::OpenFailed);
    let other = ring.seal(binding(3), b"another value").unwrap();
    assert_eq!(key.open(binding(3), &other).unwrap_err(), CryptoError::OpenFailed, "another value's data key");
    assert_eq!(format!("{key:?}"), "DataKey(..)");
    assert!(ring.data_key(binding(4), &sealed).is_err());
}
