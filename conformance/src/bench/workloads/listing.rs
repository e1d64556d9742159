//! tags-list and catalog: listing a repository with many tags and a
//! registry with many repositories, whole and page by page.

use std::sync::{Arc, Mutex, PoisonError};

use reqwest::Url;
use serde_json::Value;

use super::{Bench, POOL_NONCE, stream};
use crate::bench::client::{OpError, OpResult, Registry};
use crate::bench::options::Workload;
use crate::bench::report::Report;
use crate::bench::runner::{Limit, Sample};

const LIST_CONCURRENCY: usize = 8;
const SETUP_CONCURRENCY: usize = 16;

pub async fn tags_list(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let repo = b.repo("tags");
    ensure_tags(b, report, &repo).await?;
    let path = format!("/v2/{repo}/tags/list");
    let list = List {
        what: "GET tags/list",
        field: "tags",
        at_least: b.opts.tags,
    };
    measure_listing(b, report, Workload::TagsList, &path, list).await;
    Ok(())
}

pub async fn catalog(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    ensure_repositories(b, report).await?;
    let list = List {
        what: "GET _catalog",
        field: "repositories",
        at_least: b.opts.repos,
    };
    measure_listing(b, report, Workload::Catalog, "/v2/_catalog", list).await;
    Ok(())
}

fn tag_name(i: u64) -> String {
    format!("t{i:06}")
}

/// One manifest under `--tags` tags, pushed unless the last tag exists.
async fn ensure_tags(b: &Arc<Bench>, report: &mut Report, repo: &Arc<str>) -> anyhow::Result<()> {
    let tags = b.opts.tags;
    if tags == 0
        || b.registry
            .head_manifest(repo, &tag_name(tags - 1))
            .await
            .is_ok()
    {
        return Ok(());
    }
    let image = Arc::new(b.image(POOL_NONCE, stream::LISTING_IMAGE, 0));
    for blob in image.blobs() {
        b.registry.push_blob(repo, blob).await?;
    }
    let (bench, repo) = (b.clone(), repo.clone());
    let op = move |seq| {
        let (b, repo, image) = (bench.clone(), repo.clone(), image.clone());
        async move {
            let tag = tag_name(seq);
            let put = b.registry.put_manifest(&repo, &tag, &image.manifest).await;
            Sample::from(put.map(|()| image.manifest.len() as u64))
        }
    };
    let case = "setup: PUT manifest, new tag";
    let outcome = b
        .measure(
            report,
            Workload::TagsList,
            case,
            SETUP_CONCURRENCY,
            Limit::Ops(tags),
            op,
        )
        .await;
    anyhow::ensure!(
        outcome.stats[0].errors == 0,
        "some tags could not be created"
    );
    Ok(())
}

/// `--repos` repositories holding one image, its blobs mounted from the
/// first; created unless the last one exists.
async fn ensure_repositories(b: &Arc<Bench>, report: &mut Report) -> anyhow::Result<()> {
    let repos = b.opts.repos;
    let name = |i: u64| b.repo(&format!("catalog/r{i:05}"));
    if repos == 0
        || b.registry
            .head_manifest(&name(repos - 1), "latest")
            .await
            .is_ok()
    {
        return Ok(());
    }
    let image = Arc::new(b.image(POOL_NONCE, stream::LISTING_IMAGE, 1));
    let first = name(0);
    for blob in image.blobs() {
        b.registry.push_blob(&first, blob).await?;
    }
    b.registry
        .put_manifest(&first, "latest", &image.manifest)
        .await?;
    let bench = b.clone();
    let op = move |seq| {
        let (b, image, first) = (bench.clone(), image.clone(), first.clone());
        async move {
            let result: OpResult<u64> = async {
                let repo = b.repo(&format!("catalog/r{:05}", seq + 1));
                for blob in image.blobs() {
                    b.registry.mount_blob(&repo, &first, blob).await?;
                }
                b.registry
                    .put_manifest(&repo, "latest", &image.manifest)
                    .await?;
                Ok(image.manifest.len() as u64)
            }
            .await;
            Sample::from(result)
        }
    };
    let case = "setup: new repo (mount + manifest)";
    let outcome = b
        .measure(
            report,
            Workload::Catalog,
            case,
            SETUP_CONCURRENCY,
            Limit::Ops(repos - 1),
            op,
        )
        .await;
    anyhow::ensure!(
        outcome.stats[0].errors == 0,
        "some repositories could not be created"
    );
    Ok(())
}

/// A list endpoint and what its answers must hold.
#[derive(Clone, Copy)]
struct List {
    what: &'static str,
    /// The JSON array in the body.
    field: &'static str,
    /// Items a complete listing has at least.
    at_least: u64,
}

impl List {
    fn items(&self, body: &[u8]) -> OpResult<Vec<String>> {
        let json: Value = serde_json::from_slice(body)
            .map_err(|e| OpError::invalid(self.what, format!("body is not JSON: {e}")))?;
        let items = match &json[self.field] {
            Value::Null => return Ok(Vec::new()),
            Value::Array(items) => items,
            _ => {
                return Err(OpError::invalid(
                    self.what,
                    format!("`{}` is not a list", self.field),
                ));
            }
        };
        Ok(items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }
}

/// Two cases: the whole list in one GET, and page by page (`n=`),
/// following the `Link` headers.
async fn measure_listing(
    b: &Arc<Bench>,
    report: &mut Report,
    workload: Workload,
    path: &str,
    list: List,
) {
    let concurrency = b.concurrency(LIST_CONCURRENCY);

    let whole = b.registry.url(path);
    let bench = b.clone();
    let op = move |_| {
        let (b, url) = (bench.clone(), whole.clone());
        async move {
            let result: OpResult<u64> = async {
                let page = b.registry.get_page(list.what, url).await?;
                let count = list.items(&page.body)?.len() as u64;
                // A registry may cap an unpaginated answer; then it links on.
                if page.next.is_none() && count < list.at_least {
                    let detail =
                        format!("listed {count} items, expected at least {}", list.at_least);
                    return Err(OpError::invalid(list.what, detail));
                }
                Ok(page.body.len() as u64)
            }
            .await;
            Sample::from(result)
        }
    };
    b.measure(
        report,
        workload,
        "whole list, one GET",
        concurrency,
        b.limit(),
        op,
    )
    .await;

    let mut first = b.registry.url(path);
    first
        .query_pairs_mut()
        .append_pair("n", &b.opts.page_size.to_string());
    let walks = Arc::new(Walks {
        first,
        list,
        page_size: b.opts.page_size,
        cursors: Mutex::default(),
    });
    let bench = b.clone();
    let op = move |_| {
        let (b, walks) = (bench.clone(), walks.clone());
        async move { Sample::from(walks.step(&b.registry).await) }
    };
    let case = format!("page n={} via Link", b.opts.page_size);
    b.measure(report, workload, &case, concurrency, b.limit(), op)
        .await;
}

/// Walks through a paginated list, one page per operation: each worker
/// continues a walk another left off (or starts one), so `concurrency`
/// walks are in flight, each following its `Link` headers.
struct Walks {
    first: Url,
    list: List,
    page_size: u64,
    cursors: Mutex<Vec<Cursor>>,
}

struct Cursor {
    next: Url,
    seen: u64,
    last: Option<String>,
}

impl Walks {
    /// Fetches and checks one page; returns its size in bytes. A failed
    /// page abandons its walk.
    async fn step(&self, registry: &Registry) -> OpResult<u64> {
        let what = self.list.what;
        let popped = self
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let cursor = popped.unwrap_or_else(|| Cursor {
            next: self.first.clone(),
            seen: 0,
            last: None,
        });
        let page = registry.get_page(what, cursor.next).await?;
        let items = self.list.items(&page.body)?;
        if items.len() as u64 > self.page_size {
            let detail = format!("{} items in a page of n={}", items.len(), self.page_size);
            return Err(OpError::invalid(what, detail));
        }
        let mut previous = cursor.last.as_deref();
        for item in &items {
            if previous.is_some_and(|p| p >= item.as_str()) {
                let detail = format!("{item:?} after {previous:?}: not in lexical order");
                return Err(OpError::invalid(what, detail));
            }
            previous = Some(item);
        }
        let seen = cursor.seen + items.len() as u64;
        match page.next {
            Some(_) if items.is_empty() => {
                return Err(OpError::invalid(what, "empty page with a next link"));
            }
            Some(next) => {
                let last = items.last().cloned();
                let cursor = Cursor { next, seen, last };
                self.cursors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(cursor);
            }
            None if seen < self.list.at_least => {
                let detail = format!(
                    "the walk ended after {seen} items, expected at least {}",
                    self.list.at_least
                );
                return Err(OpError::invalid(what, detail));
            }
            None => {}
        }
        Ok(page.body.len() as u64)
    }
}
