//! `WWW-Authenticate` challenge parsing and the Docker token flow.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use serde::Deserialize;

/// Username and password for the registry.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(raw))
    }
}

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme, e.g. `bearer` or `basic`.
    pub scheme: String,
    /// Parameters with lower-cased names, in header order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// All challenges found in the `WWW-Authenticate` headers of a response.
pub(crate) fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Parses a header value such as
/// `Bearer realm="https://auth",service="reg",scope="repository:a:pull,push"`.
/// Several challenges may share one header value.
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        // A token followed by whitespace (or the end) starts a new challenge;
        // a token followed by '=' is a parameter of the current one.
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        if token_end == 0 {
            // Stray separator: drop one character and carry on.
            let skip = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[skip..];
            continue;
        }
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        match (after.strip_prefix('='), out.last_mut()) {
            (Some(value_part), Some(current)) => {
                let (value, remaining) = parse_param_value(value_part.trim_start());
                current.params.push((token.to_ascii_lowercase(), value));
                rest = remaining;
            }
            _ => {
                out.push(Challenge {
                    scheme: token.to_ascii_lowercase(),
                    params: Vec::new(),
                });
                rest = &rest[token_end..];
            }
        }
    }
    out
}

/// Parses a quoted-string or token value; returns it and the remaining input.
fn parse_param_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                _ => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = input.find(',').unwrap_or(input.len());
        (input[..end].trim().to_owned(), &input[end..])
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// Obtains a bearer token from the challenge's realm, authenticating with
/// Basic credentials when available (anonymous otherwise), and returns the
/// `Authorization` header value to use.
pub(crate) async fn fetch_bearer_token(
    http: &reqwest::Client,
    challenged_url: &Url,
    challenge: &Challenge,
    credentials: Option<&Credentials>,
) -> anyhow::Result<String> {
    let realm = challenge
        .param("realm")
        .context("Bearer challenge without realm")?;
    // The realm is normally absolute; a relative one is resolved against the
    // URL that was challenged.
    let mut url = challenged_url
        .join(realm)
        .with_context(|| format!("invalid token realm {realm:?}"))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = challenge.param("service") {
            query.append_pair("service", service);
        }
        if let Some(scope) = challenge.param("scope") {
            for single in scope.split_whitespace() {
                query.append_pair("scope", single);
            }
        }
    }
    let mut request = http.get(url.clone());
    if let Some(credentials) = credentials {
        request = request.header(AUTHORIZATION, credentials.basic_header());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("token request to {url} failed"))?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "token endpoint {url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .with_context(|| format!("token endpoint {url} returned invalid JSON"))?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("token endpoint {url} returned no token"))?;
    Ok(format!("Bearer {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let parsed = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parsed.len(), 1);
        let c = &parsed[0];
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn parses_multiple_challenges_and_tokens() {
        let parsed = parse_challenges(r#"Basic realm="reg", Bearer realm=https://t, error=x"#);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].scheme, "basic");
        assert_eq!(parsed[0].param("realm"), Some("reg"));
        assert_eq!(parsed[1].scheme, "bearer");
        assert_eq!(parsed[1].param("realm"), Some("https://t"));
        assert_eq!(parsed[1].param("error"), Some("x"));
    }

    #[test]
    fn tolerates_garbage() {
        assert!(parse_challenges("=\n=,").is_empty());
        let parsed = parse_challenges("Basic abc==");
        assert_eq!(parsed[0].scheme, "basic");
    }

    #[test]
    fn parses_bare_scheme() {
        let parsed = parse_challenges("Basic");
        assert_eq!(parsed.len(), 1);
        assert!(parsed[0].params.is_empty());
    }

    #[test]
    fn basic_header_is_base64() {
        let c = Credentials {
            username: "user".into(),
            password: "pass".into(),
        };
        assert_eq!(c.basic_header(), "Basic dXNlcjpwYXNz");
    }
}
