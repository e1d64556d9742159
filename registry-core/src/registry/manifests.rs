//! Manifest pushes, pulls and deletes, and the listings.

use bytes::Bytes;

use super::policies::check_put;
use super::{MAX_PAGE, Registry, StoredManifest};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::index::{ManifestInfo, Page, Referrer};
use crate::manifest;
use crate::model::{log, manifests};
use crate::names::{Reference, RepoName};

impl Registry {
    /// Validates and stores a manifest pushed to `reference` by `actor`
    /// (recorded in the activity log in the same transaction).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        actor: &str,
    ) -> Result<StoredManifest> {
        let size = body.len() as u64;
        let limit = self.options.limits.max_manifest_bytes;
        if size > limit {
            return Err(Error::ManifestTooLarge { size, limit });
        }
        let (algorithm, tag) = match reference {
            Reference::Digest(d) => (d.algorithm(), None),
            Reference::Tag(t) => (Algorithm::Sha256, Some(t.to_string())),
        };
        let parsed = manifest::parse(&body, content_type, algorithm)?;
        if let Reference::Digest(d) = reference
            && *d != parsed.digest
        {
            return Err(Error::DigestInvalid(format!(
                "manifest pushed as {d} has digest {}",
                parsed.digest
            )));
        }
        let entry = Registry::activity(
            actor,
            "push",
            repo,
            tag.clone(),
            Some(&parsed.digest),
            serde_json::json!({ "media_type": parsed.media_type, "size": size }),
        );
        let stored = StoredManifest {
            digest: parsed.digest.clone(),
            subject: parsed.subject.clone(),
        };
        let (r, link_foreign) = (repo.to_string(), self.options.link_foreign_blobs);
        let retain = self.options.activity_retention;
        let policies = self.policies.clone();
        let _pass = self.node.pass(&[]).await?;
        self.index
            .db()
            .write(move |tx| {
                let digest = parsed.digest.as_str();
                check_put(&policies, tx, &r, tag.as_deref(), digest)?;
                manifests::put_manifest(tx, &r, &parsed, &body, tag.as_deref(), link_foreign)?;
                log::record_activity(tx, entry.clone(), retain).map(|_| ())
            })
            .await?;
        Ok(stored)
    }

    /// The digest a reference names in `repo`.
    pub async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => self
                .index
                .resolve_tag(repo, t)
                .await?
                .ok_or(Error::ManifestUnknown),
        }
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<ManifestInfo> {
        let digest = self.resolve(repo, reference).await?;
        let info = self
            .index
            .manifest(repo, &digest, with_body)
            .await?
            .ok_or(Error::ManifestUnknown)?;
        if with_body {
            self.note_pull(repo, &digest); // a pull (HEAD is a question)
        }
        Ok(info)
    }

    /// Deletes a tag, or a manifest (with its tags) by digest, on behalf of
    /// `actor`; returns the manifest's digest.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        actor: &str,
    ) -> Result<Digest> {
        let (r, reference2) = (repo.to_string(), reference.clone());
        let (repo2, actor) = (repo.clone(), actor.to_owned());
        let retain = self.options.activity_retention;
        let policies = self.policies.clone();
        let digest = self
            .index
            .db()
            .write(move |tx| {
                let (action, tag, digest) = match &reference2 {
                    Reference::Tag(t) => {
                        policies.read(tx)?.check_tag(tx, &r, t.as_str(), None)?;
                        let d = manifests::delete_tag(tx, &r, t.as_str())?;
                        ("tag_delete", Some(t.to_string()), d)
                    }
                    Reference::Digest(d) => {
                        policies.read(tx)?.check_manifest(tx, &r, d.as_str())?;
                        manifests::delete_manifest(tx, &r, d.as_str())?;
                        ("manifest_delete", None, d.to_string())
                    }
                };
                let digest: Digest = digest.parse()?;
                let entry = Registry::activity(
                    &actor,
                    action,
                    &repo2,
                    tag,
                    Some(&digest),
                    serde_json::Value::Null,
                );
                log::record_activity(tx, entry, retain)?;
                Ok(digest)
            })
            .await?;
        Ok(digest)
    }

    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        // A limit of 0 still reports an unknown repository as such.
        let page = self.index.tags(repo, last, limit).await?;
        Ok(if limit == 0 { Page::default() } else { page })
    }

    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        if limit == 0 {
            return Ok(Page::default());
        }
        self.index.repositories(last, limit).await
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        self.index.referrers(repo, subject, artifact_type).await
    }
}
