//! The users file and the authenticator.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// Small argon2 parameters: the tests check behaviour, not cost.
fn cheap(password: &str) -> String {
    hash_password_with(password, Params::new(1024, 1, 1, None).unwrap()).unwrap()
}

fn users() -> Users {
    let hashes = HashMap::from([
        ("ann".to_string(), cheap("a-secret")),
        ("bob".to_string(), cheap("b-secret")),
    ]);
    Users::from_hashes(hashes, "test").unwrap()
}

fn request<'a>(login: Option<&'a str>, passcode: Option<&'a str>, peer: u8) -> ConnectRequest<'a> {
    ConnectRequest {
        login,
        passcode,
        host: None,
        session: 1,
        peer: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, peer))),
    }
}

#[test]
fn hashes_verify_and_plain_text_is_refused_with_the_how_to() {
    let users = users();
    assert!(users.check("ann", "a-secret"));
    assert!(
        users.check("ann", "a-secret"),
        "again, from the remembered digest"
    );
    assert!(!users.check("ann", "b-secret"));
    assert!(!users.check("bob", "a-secret"), "ann's digest is not bob's");
    assert!(!users.check("eve", "a-secret"));
    let plain = HashMap::from([("ann".to_string(), "a-secret".to_string())]);
    let err = Users::from_hashes(plain, "users.json").unwrap_err();
    assert_eq!(
        err,
        UsersError::NotAHash {
            path: "users.json".into(),
            user: "ann".into()
        }
    );
    assert!(
        err.to_string().contains("sockeye-chat hash-password"),
        "{err}"
    );
    let argon2i = Argon2::new(
        Algorithm::Argon2i,
        Version::V0x13,
        Params::new(1024, 1, 1, None).unwrap(),
    )
    .hash_password(
        b"x",
        &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
    )
    .unwrap()
    .to_string();
    let weak = HashMap::from([("ann".to_string(), argon2i)]);
    assert!(
        Users::from_hashes(weak, "u").is_err(),
        "argon2i is not argon2id"
    );
    let slash = HashMap::from([("a/b".to_string(), cheap("x"))]);
    assert!(matches!(
        Users::from_hashes(slash, "u"),
        Err(UsersError::BadName { .. })
    ));
}

#[test]
fn the_authenticator_names_refuses_and_slows_down() {
    let auth = authenticator(Some(users()));
    assert_eq!(
        auth(&request(Some("ann"), Some("a-secret"), 1)),
        Ok(Some("ann".into()))
    );
    assert!(auth(&request(Some("ann"), None, 1)).is_err());
    let mut delays = Vec::new();
    for _ in 0..5 {
        let refusal = auth(&request(Some("ann"), Some("wrong"), 1)).unwrap_err();
        delays.push(refusal.delay_ms);
    }
    assert_eq!(delays[..3], [0, 0, 0], "{delays:?}");
    assert!(delays[3] > 0 && delays[4] > delays[3], "{delays:?}");
    // The right passcode from that address now waits too (refused unchecked), but not
    // from another address.
    let refusal = auth(&request(Some("ann"), Some("a-secret"), 1)).unwrap_err();
    assert!(
        refusal.reason.contains("too many failed logins"),
        "{refusal:?}"
    );
    assert_eq!(
        auth(&request(Some("ann"), Some("a-secret"), 2)),
        Ok(Some("ann".into()))
    );
}

#[test]
fn without_users_login_names_the_user_unchecked() {
    let auth = authenticator(None);
    assert_eq!(
        auth(&request(Some("ann"), Some("any"), 1)),
        Ok(Some("ann".into()))
    );
    assert_eq!(auth(&request(None, None, 1)), Ok(None));
    assert!(auth(&request(Some("a/b"), None, 1)).is_err());
}
