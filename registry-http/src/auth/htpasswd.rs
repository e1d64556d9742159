//! Users from an Apache htpasswd file with bcrypt entries (`htpasswd -B`),
//! reloaded when the file changes.
//!
//! Verification is timing-safe against user enumeration: an unknown user is
//! checked against a dummy hash of the same cost, so both answers take a
//! bcrypt's time. Successful verifications are remembered briefly (keyed by
//! a hash of name and password, never the password) because clients send
//! Basic credentials with every request and bcrypt is deliberately slow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

/// How long a verified password is remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// How often the file's modification time is looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

struct Loaded {
    users: HashMap<String, String>,
    /// A bcrypt hash of the highest cost in the file, for unknown users.
    dummy: String,
    modified: Option<SystemTime>,
    checked: Instant,
}

pub struct Htpasswd {
    path: PathBuf,
    state: Mutex<Loaded>,
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
}

fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading htpasswd file {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            tracing::warn!(line = n + 1, "htpasswd line without ':' ignored");
            continue;
        };
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            tracing::warn!(
                user,
                "htpasswd entry is not bcrypt (use htpasswd -B); ignored"
            );
            continue;
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    let cost = users
        .values()
        .filter_map(|h| bcrypt_cost(h))
        .max()
        .unwrap_or(10);
    let dummy = bcrypt::hash("not a password anyone has", cost.clamp(4, 31))?;
    Ok(Loaded {
        users,
        dummy,
        modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        checked: Instant::now(),
    })
}

impl Htpasswd {
    pub fn open(path: &Path) -> anyhow::Result<Htpasswd> {
        let loaded = load(path)?;
        tracing::info!(users = loaded.users.len(), file = %path.display(), "htpasswd loaded");
        Ok(Htpasswd {
            path: path.to_owned(),
            state: Mutex::new(loaded),
            remembered: Mutex::new(HashMap::new()),
        })
    }

    /// Reloads the file if it changed (looked at once a second at most).
    fn refresh(&self) {
        let mut state = self.state.lock().expect("htpasswd");
        if state.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        state.checked = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == state.modified {
            return;
        }
        match load(&self.path) {
            Ok(fresh) => {
                tracing::info!(users = fresh.users.len(), "htpasswd file changed; reloaded");
                *state = fresh;
                self.remembered.lock().expect("remembered").clear();
            }
            Err(e) => {
                tracing::error!(error = %e, "htpasswd file changed but could not be read; keeping the old one")
            }
        }
    }

    fn key(user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `password` is `user`'s. Takes a bcrypt's time whether or not
    /// the user exists (unless remembered from a recent success).
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        self.refresh();
        let key = Htpasswd::key(user, password);
        {
            let mut remembered = self.remembered.lock().expect("remembered");
            match remembered.get(&key) {
                Some(t) if t.elapsed() < REMEMBER => return true,
                Some(_) => {
                    remembered.remove(&key);
                }
                None => {}
            }
        }
        let (hash, known) = {
            let state = self.state.lock().expect("htpasswd");
            match state.users.get(user) {
                Some(h) => (h.clone(), true),
                None => (state.dummy.clone(), false),
            }
        };
        let password = password.to_owned();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok && known {
            let mut remembered = self.remembered.lock().expect("remembered");
            remembered.retain(|_, t| t.elapsed() < REMEMBER);
            remembered.insert(key, Instant::now());
        }
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_bcrypt_entries_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let alice = bcrypt::hash("wonderland", 4).unwrap();
        std::fs::write(
            &path,
            format!("# users\nalice:{alice}\nold:$apr1$xyz$abc\n"),
        )
        .unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.verify("alice", "wonderland").await);
        assert!(h.verify("alice", "wonderland").await, "remembered");
        assert!(!h.verify("alice", "wrong").await);
        assert!(
            !h.verify("old", "anything").await,
            "non-bcrypt entries are ignored"
        );
        assert!(!h.verify("nobody", "wonderland").await);

        let bob = bcrypt::hash("builder", 4).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&path, format!("bob:{bob}\n")).unwrap();
        assert!(h.verify("bob", "builder").await);
        assert!(
            !h.verify("alice", "wonderland").await,
            "removed users are forgotten"
        );
    }
}
