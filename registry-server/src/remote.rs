//! A running server's admin API, as the `gc` and `retention` commands reach
//! it: credentials kept out of URLs and messages, a private CA trusted.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use crate::RemoteArgs;

pub struct Remote {
    /// The server's URL without credentials.
    pub base: String,
    login: Option<(String, String)>,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(args: &RemoteArgs) -> anyhow::Result<Remote> {
        let (base, login) = credentials(args)?;
        Ok(Remote {
            base,
            login,
            http: client(args)?,
        })
    }

    /// Sends a request with an optional JSON body; the JSON answer, or an
    /// error naming the status and the server's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let base = &self.base;
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some((user, password)) = &self.login {
            req = req.basic_auth(user, Some(password));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        // Errors name the server without credentials (reqwest's own
        // messages would repeat the URL they were sent to).
        let res = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("reaching {base}: {}", e.without_url()))?;
        let status = res.status();
        let answer: Value = res.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{base}{path} answered {status}: {answer}");
        }
        Ok(answer)
    }
}

/// The server's URL without credentials, and the credentials: from the
/// URL's user info, or `--user` with a password from `--password-file`,
/// `REGISTRY_PASSWORD` or a prompt.
fn credentials(args: &RemoteArgs) -> anyhow::Result<(String, Option<(String, String)>)> {
    let mut url = url::Url::parse(&args.url).with_context(|| "--url is not a URL".to_owned())?;
    let in_url = (!url.username().is_empty()).then(|| {
        let user = url.username().to_owned();
        let password = url.password().unwrap_or("").to_owned();
        (user, password)
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let base = url.as_str().trim_end_matches('/').to_owned();
    let Some(user) = args.user.clone() else {
        return Ok((base, in_url));
    };
    let password = match (&args.password_file, std::env::var("REGISTRY_PASSWORD")) {
        (Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, Ok(p)) => p,
        (None, Err(_)) => rpassword::prompt_password(format!("password for {user}: "))
            .context("reading the password (or give --password-file or REGISTRY_PASSWORD)")?,
    };
    Ok((base, Some((user, password))))
}

/// An HTTP client that trusts `--ca-cert` beside the usual roots.
fn client(args: &RemoteArgs) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}
