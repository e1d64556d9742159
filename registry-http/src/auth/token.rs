//! Bearer tokens in the Docker registry token format: JWTs whose `access`
//! claim lists `{type, name, actions}` grants.
//!
//! Berth issues its own (HMAC-SHA256 with a secret kept in the data
//! directory: only Berth reads them) and can also trust an external issuer
//! whose public key (PEM) or key set (JWKS) it is given.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use registry_core::Clock;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::{Deserialize, Serialize};

use super::policy::Actions;

/// One grant in a token: `repository:<name>:pull,push`, or
/// `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Grant>,
    /// Set on refresh tokens (which grant nothing by themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Claims {
    /// What the token grants on a repository.
    pub fn actions_on(&self, repo: &str) -> Actions {
        self.access
            .iter()
            .filter(|g| g.kind == "repository" && g.name == repo)
            .fold(Actions::NONE, |a, g| {
                a.union(Actions::parse(&g.actions.join(",")))
            })
    }

    pub fn grants(&self, kind: &str, name: &str) -> bool {
        self.access
            .iter()
            .any(|g| g.kind == kind && g.name == name && !g.actions.is_empty())
    }
}

struct Verifier {
    key: DecodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
    issuer: String,
}

pub struct Tokens {
    clock: Clock,
    pub service: String,
    pub issuer: String,
    pub lifetime: Duration,
    pub refresh_lifetime: Duration,
    signing: EncodingKey,
    verifiers: Vec<Verifier>,
}

/// The secret for Berth's own tokens: read from `path`, or created there
/// (random, owner-only) on first start. Tokens are signed with it from the
/// first start on, so it is durable (whole, or absent) before the first
/// token is issued; a secret that is there but cannot be read is an error,
/// never replaced.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(s) => {
            anyhow::ensure!(
                s.len() >= 32,
                "token secret {} is shorter than 32 bytes",
                path.display()
            );
            return Ok(s);
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())));
        }
        Err(_) => {}
    }
    let mut secret = vec![0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    registry_core::durable::write_private_file(path, &secret)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

impl Tokens {
    pub fn new(
        service: &str,
        issuer: &str,
        lifetime: Duration,
        secret: &[u8],
        clock: Clock,
    ) -> Tokens {
        Tokens {
            clock,
            service: service.to_owned(),
            issuer: issuer.to_owned(),
            lifetime,
            refresh_lifetime: Duration::from_secs(30 * 24 * 3600),
            signing: EncodingKey::from_secret(secret),
            verifiers: vec![Verifier {
                key: DecodingKey::from_secret(secret),
                algorithm: Algorithm::HS256,
                kid: None,
                issuer: issuer.to_owned(),
            }],
        }
    }

    /// Also accept tokens from `issuer` signed with the public key in a PEM
    /// file (RSA or EC P-256), or any key of a JWKS file.
    pub fn trust(
        &mut self,
        issuer: &str,
        public_key: Option<&Path>,
        jwks: Option<&Path>,
    ) -> anyhow::Result<()> {
        if let Some(path) = public_key {
            let pem = std::fs::read(path)?;
            let (key, algorithm) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(k) => (k, Algorithm::RS256),
                Err(_) => (
                    DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        anyhow::anyhow!(
                            "{}: neither an RSA nor an EC public key: {e}",
                            path.display()
                        )
                    })?,
                    Algorithm::ES256,
                ),
            };
            self.verifiers.push(Verifier {
                key,
                algorithm,
                kid: None,
                issuer: issuer.to_owned(),
            });
        }
        if let Some(path) = jwks {
            let set: JwkSet = serde_json::from_slice(&std::fs::read(path)?)?;
            for jwk in &set.keys {
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                    .unwrap_or(Algorithm::RS256);
                self.verifiers.push(Verifier {
                    key: DecodingKey::from_jwk(jwk)?,
                    algorithm,
                    kid: jwk.common.key_id.clone(),
                    issuer: issuer.to_owned(),
                });
            }
        }
        Ok(())
    }

    fn sign(&self, claims: &Claims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &self.signing)
            .expect("HMAC signing cannot fail")
    }

    fn claims(
        &self,
        subject: &str,
        access: Vec<Grant>,
        lifetime: Duration,
        kind: Option<&str>,
    ) -> Claims {
        let t = self.clock.now_ms() / 1000;
        Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: t + lifetime.as_secs(),
            nbf: t.saturating_sub(1),
            iat: t,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
            kind: kind.map(str::to_owned),
        }
    }

    /// An access token for `subject` carrying `access`; with its claims.
    pub fn issue(&self, subject: &str, access: Vec<Grant>) -> (String, Claims) {
        let claims = self.claims(subject, access, self.lifetime, None);
        (self.sign(&claims), claims)
    }

    /// A refresh token: names the user only, re-authorized on every use.
    pub fn issue_refresh(&self, subject: &str) -> String {
        let claims = self.claims(subject, Vec::new(), self.refresh_lifetime, Some("refresh"));
        self.sign(&claims)
    }

    /// Accepts claims within their validity period (5 s of leeway).
    fn in_period(&self, claims: Claims) -> Result<Claims, String> {
        const LEEWAY: u64 = 5;
        let now = self.clock.now_ms() / 1000;
        if claims.exp + LEEWAY < now {
            return Err("ExpiredSignature".into());
        }
        if claims.nbf > now + LEEWAY {
            return Err("ImmatureSignature".into());
        }
        Ok(claims)
    }

    /// Checks signature, issuer, audience and validity period.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let mut last = "no key accepts this token".to_owned();
        for v in self.verifiers.iter().filter(|v| v.algorithm == header.alg) {
            if let (Some(want), Some(have)) = (&v.kid, &header.kid)
                && want != have
            {
                continue;
            }
            let mut validation = Validation::new(v.algorithm);
            validation.set_audience(&[&self.service]);
            validation.set_issuer(&[&v.issuer]);
            // The validity period is checked against the registry's clock.
            validation.validate_exp = false;
            validation.required_spec_claims = ["exp".to_owned()].into();
            match decode::<Claims>(token, &v.key, &validation) {
                Ok(data) => return self.in_period(data.claims),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, actions: &[&str]) -> Grant {
        Grant {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn issue_verify_and_refuse() {
        let t = Tokens::new(
            "berth",
            "berth-issuer",
            Duration::from_secs(300),
            &[7u8; 64],
            Clock::system(),
        );
        let (token, _) = t.issue("alice", vec![grant("a/b", &["pull", "push"])]);
        let c = t.verify(&token).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.actions_on("a/b"), Actions::PUSH);
        assert_eq!(c.actions_on("a"), Actions::NONE);
        // Forged: another secret.
        let other = Tokens::new(
            "berth",
            "berth-issuer",
            Duration::from_secs(300),
            &[8u8; 64],
            Clock::system(),
        );
        assert!(t.verify(&other.issue("alice", vec![]).0).is_err());
        // Another audience.
        let elsewhere = Tokens::new(
            "other",
            "berth-issuer",
            Duration::from_secs(300),
            &[7u8; 64],
            Clock::system(),
        );
        assert!(t.verify(&elsewhere.issue("alice", vec![]).0).is_err());
        // Expired.
        let mut old = t.claims("alice", vec![], Duration::ZERO, None);
        let now = Clock::system().now_ms() / 1000;
        old.exp = now - 60;
        old.nbf = now - 120;
        assert!(t.verify(&t.sign(&old)).unwrap_err().contains("xpired"));
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = t.issue("root", vec![grant("a/b", &["delete"])]).0;
        parts[1] = forged.split('.').nth(1).unwrap();
        assert!(t.verify(&parts.join(".")).is_err());
        assert!(t.verify("not.a.token").is_err());
    }
}
