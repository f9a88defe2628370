//! Who may CONNECT: the `--users` file of argon2id password hashes, `sockeye-chat
//! hash-password`, and the authenticator the broker calls (with [`throttle`] slowing down
//! addresses that keep failing).
//!
//! A users file is a JSON object of user name → PHC string (`$argon2id$v=19$m=...`). A value
//! that is not an argon2id hash is refused when the file is loaded, with the command that makes
//! one: passcodes never sit in plain text on disk. Verification is argon2's own (the hash
//! output compared in constant time); an unknown user is checked against a dummy hash, so that
//! the answer takes as long as for a known one.
//!
//! The broker calls the authenticator under its lock, and one argon2 verification takes tens of
//! milliseconds by design: so a passcode verified once is remembered as a BLAKE2b digest keyed
//! with a random per-process key, and the same user's next CONNECT with it (a page reload, a
//! reconnect) is checked against that in constant time. Failures always pay argon2 (and the
//! [`throttle`]).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::broker::{AuthRefusal, Authenticator, ConnectRequest};

pub mod throttle;

use throttle::{FailedLogins, Verdict};

/// Why a users file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsersError {
    Read {
        path: String,
        error: String,
    },
    Json {
        path: String,
        error: String,
    },
    /// A user name that cannot be a destination segment (`/user/{name}/...`).
    BadName {
        path: String,
        name: String,
    },
    /// A value that is not an argon2id PHC string: a plain-text passcode, most likely.
    NotAHash {
        path: String,
        user: String,
    },
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Read { path, error } => write!(f, "cannot read {path}: {error}"),
            UsersError::Json { path, error } => write!(
                f,
                "bad users file {path} (want {{\"user\": \"$argon2id$...\"}}): {error}"
            ),
            UsersError::BadName { path, name } => write!(
                f,
                "bad users file {path}: invalid user name {name:?} (empty, or holds '/' or a control character)"
            ),
            UsersError::NotAHash { path, user } => write!(
                f,
                "users file {path}: the entry of {user:?} is not an argon2id hash (plain-text passcodes are refused); \
                 make one with `sockeye-chat hash-password` (it reads the password from standard input, \
                 e.g. `printf %s 'the passcode' | sockeye-chat hash-password`) and put its output in place of the passcode"
            ),
        }
    }
}

impl std::error::Error for UsersError {}

/// A user name must fit in `/user/{name}/queue/...`.
pub fn valid_login(login: &str) -> bool {
    !login.is_empty() && !login.contains('/') && !login.chars().any(char::is_control)
}

/// The users of a `--users` file: name → argon2id PHC string (checked at load).
#[derive(Debug)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// Digests of passcodes verified by argon2, per user (see the module's doc).
    verified: Mutex<HashMap<String, [u8; 64]>>,
    key: [u8; 32],
}

impl Users {
    /// Reads and checks a users file.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| UsersError::Read {
            path: shown.clone(),
            error: e.to_string(),
        })?;
        let hashes: HashMap<String, String> =
            serde_json::from_str(&text).map_err(|e| UsersError::Json {
                path: shown.clone(),
                error: e.to_string(),
            })?;
        Users::from_hashes(hashes, &shown)
    }

    /// Checks names and hashes (`path` names the source in errors).
    pub fn from_hashes(hashes: HashMap<String, String>, path: &str) -> Result<Users, UsersError> {
        let mut names: Vec<&String> = hashes.keys().collect();
        names.sort();
        for name in names {
            if !valid_login(name) {
                return Err(UsersError::BadName {
                    path: path.into(),
                    name: name.clone(),
                });
            }
            let ok = PasswordHash::new(&hashes[name])
                .is_ok_and(|h| h.algorithm == Algorithm::Argon2id.ident());
            if !ok {
                return Err(UsersError::NotAHash {
                    path: path.into(),
                    user: name.clone(),
                });
            }
        }
        let mut key = [0u8; 32];
        argon2::password_hash::rand_core::RngCore::fill_bytes(
            &mut argon2::password_hash::rand_core::OsRng,
            &mut key,
        );
        Ok(Users {
            hashes,
            verified: Mutex::default(),
            key,
        })
    }

    /// The keyed digest a verified passcode is remembered by.
    fn digest(&self, user: &str, passcode: &str) -> [u8; 64] {
        use blake2::Digest;
        let mut h = blake2::Blake2b512::new();
        h.update(self.key);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(passcode.as_bytes());
        h.finalize().into()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `passcode` is `user`'s: an argon2 verification, unless this passcode of this
    /// user was verified before.
    pub fn check(&self, user: &str, passcode: &str) -> bool {
        let digest = self.digest(user, passcode);
        let lock = || self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if lock().get(user).is_some_and(|d| same_bytes(d, &digest)) {
            return true;
        }
        match self.hashes.get(user) {
            Some(hash) if verify(hash, passcode) => {
                lock().insert(user.to_owned(), digest);
                true
            }
            Some(_) => false,
            None => {
                // As long as for a known user: no hint about who exists.
                let _ = verify(dummy_hash(), passcode);
                false
            }
        }
    }
}

/// Compares without stopping at the first difference.
fn same_bytes(a: &[u8; 64], b: &[u8; 64]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn verify(hash: &str, passcode: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(passcode.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash of nothing anyone knows, with the default parameters, made once.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("sockeye: no such user").unwrap_or_default())
}

/// An argon2id PHC string for `password` with argon2's default parameters (19 MiB, 2 passes,
/// 1 lane: OWASP's recommendation) and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    hash_password_with(password, Params::default())
}

/// [`hash_password`] with other parameters (tests use small ones).
pub fn hash_password_with(password: &str, params: Params) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
}

/// The CONNECT check: with `users`, login and passcode must match one of them, and an address
/// that keeps failing is answered late, then refused unchecked while it is (see [`throttle`]);
/// without, `login` (if any) names the user unchecked, the development default.
pub fn authenticator(users: Option<Users>) -> Authenticator {
    let Some(users) = users else {
        return Box::new(|req: &ConnectRequest<'_>| match req.login {
            None | Some("") => Ok(None),
            Some(login) if valid_login(login) => Ok(Some(login.to_owned())),
            Some(_) => Err("invalid login (holds '/' or a control character)".into()),
        });
    };
    let failed = Mutex::new(FailedLogins::default());
    let started = Instant::now();
    Box::new(move |req: &ConnectRequest<'_>| {
        let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let lock = || failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = req.peer {
            if let Verdict::Wait { delay_ms } = lock().before(ip, now_ms) {
                tracing::warn!(peer = %ip, login = req.login.unwrap_or(""), session = req.session, "CONNECT refused unchecked: too many failed logins from this address");
                return Err(AuthRefusal {
                    reason: "too many failed logins from this address, try again later".into(),
                    delay_ms,
                });
            }
        }
        let (Some(login), Some(passcode)) = (req.login, req.passcode) else {
            return Err("login and passcode required".into());
        };
        if users.check(login, passcode) {
            return Ok(Some(login.to_owned()));
        }
        let delay_ms = req.peer.map_or(0, |ip| lock().failed(ip, now_ms));
        tracing::warn!(peer = ?req.peer, login, session = req.session, delay_ms, "CONNECT refused: bad login or passcode");
        Err(AuthRefusal {
            reason: "bad login or passcode".into(),
            delay_ms,
        })
    })
}

#[cfg(test)]
mod tests;
