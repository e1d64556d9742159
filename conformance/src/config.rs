//! Run configuration, read from the same environment variables as the
//! upstream OCI conformance suite.

use anyhow::{Context, bail};

pub(crate) const ENV_ROOT_URL: &str = "OCI_ROOT_URL";
pub(crate) const ENV_NAMESPACE: &str = "OCI_NAMESPACE";
pub(crate) const ENV_CROSSMOUNT_NAMESPACE: &str = "OCI_CROSSMOUNT_NAMESPACE";
pub(crate) const ENV_AUTOMATIC_CROSSMOUNT: &str = "OCI_AUTOMATIC_CROSSMOUNT";
pub(crate) const ENV_USERNAME: &str = "OCI_USERNAME";
pub(crate) const ENV_PASSWORD: &str = "OCI_PASSWORD";
pub(crate) const ENV_TEST_PULL: &str = "OCI_TEST_PULL";
pub(crate) const ENV_TEST_PUSH: &str = "OCI_TEST_PUSH";
pub(crate) const ENV_TEST_CONTENT_DISCOVERY: &str = "OCI_TEST_CONTENT_DISCOVERY";
pub(crate) const ENV_TEST_CONTENT_MANAGEMENT: &str = "OCI_TEST_CONTENT_MANAGEMENT";
pub(crate) const ENV_DELETE_MANIFEST_BEFORE_BLOBS: &str = "OCI_DELETE_MANIFEST_BEFORE_BLOBS";
/// Not part of [`Config`]: when true, every request and response status is
/// logged to stderr.
pub(crate) const ENV_DEBUG: &str = "OCI_DEBUG";

/// Namespace used when `OCI_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "conformance/test";

/// Everything a conformance run needs to know about the registry under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the registry, e.g. `http://127.0.0.1:5000`.
    pub root_url: String,
    /// Repository the workflows push to and pull from.
    pub namespace: String,
    /// Second repository, target of the cross-repository mount checks.
    pub crossmount_namespace: String,
    /// Whether the registry mounts blobs when `from` is omitted.
    /// `None` accepts either behaviour.
    pub automatic_crossmount: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub test_pull: bool,
    pub test_push: bool,
    pub test_content_discovery: bool,
    pub test_content_management: bool,
    /// Teardown order: delete manifests before the blobs they reference
    /// (upstream `OCI_DELETE_MANIFEST_BEFORE_BLOBS`, default true).
    pub delete_manifest_before_blobs: bool,
}

impl Config {
    /// Reads the configuration from the `OCI_*` environment variables.
    ///
    /// `OCI_ROOT_URL` is required. When none of the four `OCI_TEST_*`
    /// variables is set, every workflow is enabled; as soon as one is set,
    /// only the workflows set to a true value run.
    pub fn from_env() -> anyhow::Result<Config> {
        Self::from_env_with_root_url(None)
    }

    /// Like [`Config::from_env`], but `root_url` (when given) takes precedence
    /// over `OCI_ROOT_URL`, which then becomes optional.
    pub fn from_env_with_root_url(root_url: Option<&str>) -> anyhow::Result<Config> {
        Self::from_lookup(root_url, |key| std::env::var(key).ok())
    }

    /// Every workflow enabled, no credentials, automatic cross-mount not
    /// asserted either way.
    pub fn all_workflows(root_url: &str, namespace: &str) -> Config {
        Config {
            root_url: root_url.to_owned(),
            namespace: namespace.to_owned(),
            crossmount_namespace: default_crossmount_namespace(namespace),
            automatic_crossmount: None,
            username: None,
            password: None,
            test_pull: true,
            test_push: true,
            test_content_discovery: true,
            test_content_management: true,
            delete_manifest_before_blobs: true,
        }
    }

    pub(crate) fn from_lookup(
        root_url: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let non_empty = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let flag = |key: &str| -> anyhow::Result<Option<bool>> {
            non_empty(key).map(|v| parse_bool(key, &v)).transpose()
        };

        let root_url = match root_url {
            Some(url) => url.to_owned(),
            None => non_empty(ENV_ROOT_URL).with_context(|| {
                format!("{ENV_ROOT_URL} is not set (or pass the registry URL as an argument)")
            })?,
        };
        let namespace = non_empty(ENV_NAMESPACE).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let crossmount_namespace = non_empty(ENV_CROSSMOUNT_NAMESPACE)
            .unwrap_or_else(|| default_crossmount_namespace(&namespace));
        if crossmount_namespace == namespace {
            bail!("{ENV_CROSSMOUNT_NAMESPACE} must differ from {ENV_NAMESPACE} ({namespace})");
        }

        let workflows = [
            flag(ENV_TEST_PULL)?,
            flag(ENV_TEST_PUSH)?,
            flag(ENV_TEST_CONTENT_DISCOVERY)?,
            flag(ENV_TEST_CONTENT_MANAGEMENT)?,
        ];
        let none_selected = workflows.iter().all(Option::is_none);
        let enabled = |selected: Option<bool>| none_selected || selected.unwrap_or(false);

        Ok(Config {
            root_url,
            namespace,
            crossmount_namespace,
            automatic_crossmount: flag(ENV_AUTOMATIC_CROSSMOUNT)?,
            username: non_empty(ENV_USERNAME),
            password: lookup(ENV_PASSWORD).filter(|v| !v.is_empty()),
            test_pull: enabled(workflows[0]),
            test_push: enabled(workflows[1]),
            test_content_discovery: enabled(workflows[2]),
            test_content_management: enabled(workflows[3]),
            delete_manifest_before_blobs: flag(ENV_DELETE_MANIFEST_BEFORE_BLOBS)?.unwrap_or(true),
        })
    }

    /// Name of the environment variable that enables `workflow`, for messages.
    pub(crate) fn env_var_for(workflow: &str) -> &'static str {
        match workflow {
            crate::report::PULL => ENV_TEST_PULL,
            crate::report::PUSH => ENV_TEST_PUSH,
            crate::report::CONTENT_DISCOVERY => ENV_TEST_CONTENT_DISCOVERY,
            _ => ENV_TEST_CONTENT_MANAGEMENT,
        }
    }
}

fn default_crossmount_namespace(namespace: &str) -> String {
    format!("{namespace}/other")
}

/// Accepts the same spellings as Go's `strconv.ParseBool`, which the upstream
/// suite uses.
fn parse_bool(key: &str, value: &str) -> anyhow::Result<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => bail!("{key}={other:?} is not a boolean (use 1/0 or true/false)"),
    }
}

/// Reads `OCI_DEBUG` (false when unset or unparsable).
pub(crate) fn debug_from_env() -> bool {
    std::env::var(ENV_DEBUG)
        .ok()
        .and_then(|v| parse_bool(ENV_DEBUG, &v).ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(None, |k| map.get(k).cloned())
    }

    #[test]
    fn root_url_is_required() {
        assert!(config(&[]).is_err());
        let cfg = Config::from_lookup(Some("http://x"), |_| None).unwrap();
        assert_eq!(cfg.root_url, "http://x");
    }

    #[test]
    fn no_workflow_selected_enables_all() {
        let cfg = config(&[(ENV_ROOT_URL, "http://r")]).unwrap();
        assert!(cfg.test_pull && cfg.test_push);
        assert!(cfg.test_content_discovery && cfg.test_content_management);
        assert_eq!(cfg.namespace, DEFAULT_NAMESPACE);
        assert_eq!(cfg.crossmount_namespace, "conformance/test/other");
        assert!(cfg.delete_manifest_before_blobs);
        assert_eq!(cfg.automatic_crossmount, None);
    }

    #[test]
    fn explicit_selection_is_respected() {
        let cfg = config(&[
            (ENV_ROOT_URL, "http://r"),
            (ENV_TEST_PULL, "1"),
            (ENV_TEST_PUSH, "false"),
            (ENV_AUTOMATIC_CROSSMOUNT, "0"),
            (ENV_DELETE_MANIFEST_BEFORE_BLOBS, "0"),
            (ENV_NAMESPACE, "a/b"),
            (ENV_CROSSMOUNT_NAMESPACE, "c"),
        ])
        .unwrap();
        assert!(cfg.test_pull);
        assert!(!cfg.test_push && !cfg.test_content_discovery && !cfg.test_content_management);
        assert_eq!(cfg.automatic_crossmount, Some(false));
        assert!(!cfg.delete_manifest_before_blobs);
        assert_eq!(cfg.crossmount_namespace, "c");
    }

    #[test]
    fn invalid_booleans_are_rejected() {
        assert!(config(&[(ENV_ROOT_URL, "http://r"), (ENV_TEST_PULL, "yes")]).is_err());
    }

    #[test]
    fn all_workflows_enables_everything() {
        let cfg = Config::all_workflows("http://r", "ns");
        assert!(cfg.test_pull && cfg.test_push);
        assert!(cfg.test_content_discovery && cfg.test_content_management);
        assert_ne!(cfg.crossmount_namespace, cfg.namespace);
    }
}
