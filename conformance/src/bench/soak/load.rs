//! The actors of the soak besides the pushers: pullers that verify what
//! they get, mutators that move and delete tags and delete images (keeping
//! the store near `--live-images`), an abandoner that opens uploads it never
//! finishes, and a browser of listings, the web UI and the admin API.

use std::time::Duration;

use serde_json::Value;

use super::Soak;
use super::model::{Change, Target};
use super::push::fenced;
use super::tally::{Op, is_not_found};
use crate::bench::client::{OpError, OpResult};
use crate::bench::content::{mix, sha256_digest};

/// Pause between two tag moves or tag deletes (deletes that keep the store
/// at its size do not wait).
const MUTATE_PAUSE: Duration = Duration::from_millis(200);
/// Pause between two reads of the browser.
const BROWSE_PAUSE: Duration = Duration::from_millis(500);
/// Pause of an actor that finds nothing to work on yet.
const IDLE: Duration = Duration::from_millis(200);

/// Pulls images, by tag or by digest, until the soak stops.
pub async fn puller(s: &Soak, worker: u64) {
    let mut seq = worker << 40;
    while !s.stopped() {
        seq += 1;
        let roll = mix(seq ^ s.nonce);
        let Some(target) = s.model.pick(roll, roll & 1 == 0) else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        match pull(s, &target).await {
            Ok(()) => s.tally.op(Op::Pull),
            Err(e) if is_not_found(&e) && !s.model.unchanged(&target) => s
                .tally
                .expected("404 for a pull that raced the soak's own delete or tag move"),
            Err(e) => s.tally.unexpected("pull", &e),
        }
    }
}

/// Pulls `target`: the manifest (its digest checked) and every blob it
/// references (each hashed as it streams in).
pub async fn pull(s: &Soak, target: &Target) -> OpResult<()> {
    let repo = s.repo(target.repo);
    let reference = match &target.tag {
        Some((tag, _)) => tag.clone(),
        None => target.image.digest.clone(),
    };
    let body = s.registry.get_manifest(&repo, &reference).await?;
    let digest = sha256_digest(&body);
    // A tag that moved since the pull began may give another image the
    // soak pushed to that repository.
    let moved = target.tag.is_some() && !s.model.unchanged(target);
    if digest != target.image.digest && !(moved && s.model.was_sent(target.repo, &digest)) {
        return Err(OpError::invalid(
            "verify manifest",
            format!(
                "{repo}:{reference} gave a manifest hashing to {digest}, expected {}",
                target.image.digest
            ),
        ));
    }
    let manifest: Value = serde_json::from_slice(&body)
        .map_err(|e| OpError::invalid("verify manifest", e.to_string()))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    for descriptor in std::iter::once(&manifest["config"]).chain(&layers) {
        let digest = descriptor["digest"]
            .as_str()
            .ok_or_else(|| OpError::invalid("verify manifest", "a descriptor without digest"))?;
        s.registry
            .pull_blob(&repo, digest, descriptor["size"].as_u64())
            .await?;
    }
    Ok(())
}

/// Deletes the oldest images while the store holds more than
/// `--live-images`, and otherwise moves and deletes tags now and then.
pub async fn mutator(s: &Soak, worker: u64) {
    let mut seq = worker << 40;
    while !s.stopped() {
        seq += 1;
        let roll = mix(seq ^ s.nonce ^ 0x6d75_7461_7465);
        if s.model.len() > s.opts.live_images {
            retire(s, roll).await;
            continue;
        }
        if roll.is_multiple_of(4) {
            delete_tag(s, roll).await;
        } else {
            move_tag(s, roll).await;
        }
        tokio::time::sleep(MUTATE_PAUSE).await;
    }
}

/// Deletes the oldest image: by digest, or (one time in three, if tagged)
/// one of its tags first, leaving it for the next call.
async fn retire(s: &Soak, roll: u64) {
    let Some((_, oldest)) = s.model.oldest(None) else {
        return;
    };
    let _repo = s.repo_locks[oldest.repo].lock().await;
    let Some((id, live)) = s.model.oldest(Some(oldest.repo)) else {
        return;
    };
    let repo = s.repo(live.repo);
    if roll.is_multiple_of(3)
        && let Some(tag) = live.tags.first()
    {
        s.model.change(id, &Change::DeleteTag(tag.clone()));
        match s.registry.delete_manifest(&repo, tag).await {
            Ok(()) => s.tally.op(Op::TagDelete),
            Err(e) => s.tally.unexpected("DELETE tag", &e),
        }
        return;
    }
    s.model.change(id, &Change::DeleteImage);
    match s.registry.delete_manifest(&repo, &live.image.digest).await {
        Ok(()) => s.tally.op(Op::ManifestDelete),
        Err(e) => s.tally.unexpected("DELETE manifest", &e),
    }
}

/// Deletes one tag of a random image (the image stays).
async fn delete_tag(s: &Soak, roll: u64) {
    let Some(target) = s.model.pick(roll, true) else {
        return;
    };
    let Some((tag, _)) = &target.tag else {
        return;
    };
    let _repo = s.repo_locks[target.repo].lock().await;
    if !s.model.unchanged(&target) {
        return;
    }
    s.model.change(target.id, &Change::DeleteTag(tag.clone()));
    match s.registry.delete_manifest(&s.repo(target.repo), tag).await {
        Ok(()) => s.tally.op(Op::TagDelete),
        Err(e) => s.tally.unexpected("DELETE tag", &e),
    }
}

/// Points a tag of one image of a repository at another image there.
async fn move_tag(s: &Soak, roll: u64) {
    let repo = (roll % s.opts.repos as u64) as usize;
    let _repo = s.repo_locks[repo].lock().await;
    let Some(((_, from), (to, image))) = s.model.pair(repo, roll) else {
        return;
    };
    let tags: Vec<&String> = from.tags.iter().collect();
    let tag = tags[(roll >> 32) as usize % tags.len()].clone();
    s.model.move_tag(repo, &tag, to);
    let name = s.repo(repo);
    let manifest = &image.image.manifest;
    let moved = fenced(s, || s.registry.put_manifest(&name, &tag, manifest)).await;
    s.model.settled(repo, &tag);
    match moved.0 {
        Ok(()) => s.tally.op(Op::TagMove),
        Err(e) => s.tally.unexpected("tag move (PUT manifest)", &e),
    }
}

/// Opens an upload every `--abandon-every`, writes a chunk into two of
/// three, and never finishes any: collection must purge them.
pub async fn abandoner(s: &Soak) {
    let mut seq = 0u64;
    while !s.stopped() {
        seq += 1;
        let repo = s.repo((seq % s.opts.repos as u64) as usize);
        let result = async {
            let (location, _) = fenced(s, || s.registry.start_upload(&repo)).await;
            let location = location?;
            if !seq.is_multiple_of(3) {
                let blob = s.content.scrap(seq);
                let body = blob.slices(0..blob.len());
                let append = || s.registry.append_chunk(location.clone(), 0, body.clone());
                fenced(s, append).await.0?;
            }
            Ok::<(), OpError>(())
        }
        .await;
        match result {
            Ok(()) => s.tally.op(Op::Abandon),
            Err(e) => s.tally.unexpected("abandoned upload", &e),
        }
        s.pause(s.opts.abandon_every).await;
    }
}

/// Reads listings, web UI pages, metrics and the admin API in turn.
pub async fn browser(s: &Soak) {
    let mut seq = 0u64;
    while !s.stopped() {
        seq += 1;
        let repo_index = (seq / 9 % s.opts.repos as u64) as usize;
        let repo = s.repo(repo_index);
        let (what, path) = match seq % 9 {
            0 => (
                "GET reclaimable",
                "/admin/gc/reclaimable?exact=true".to_string(),
            ),
            1 => ("GET catalog", String::new()),
            2 => ("GET tags/list", format!("/v2/{repo}/tags/list")),
            3 => ("GET /ui/", "/ui/".to_string()),
            4 => ("GET /ui/r/", format!("/ui/r/{repo}")),
            5 => ("GET /ui/gc", "/ui/gc".to_string()),
            6 => ("GET /ui/activity", "/ui/activity".to_string()),
            7 => ("GET activity", "/admin/activity?limit=50".to_string()),
            _ => ("GET gc runs", "/admin/gc/runs?limit=20".to_string()),
        };
        let result = if path.is_empty() {
            walk_catalog(s).await
        } else {
            s.registry.get_bytes(what, &path).await.map(drop)
        };
        match result {
            Ok(()) => s.tally.op(Op::Browse),
            // A repository all of whose images the soak deleted is gone.
            Err(e) if is_not_found(&e) && !s.model.holds_repo(repo_index) => {
                s.tally.expected("404 for a repository the soak emptied")
            }
            Err(e) => s.tally.unexpected(what, &e),
        }
        tokio::time::sleep(BROWSE_PAUSE).await;
    }
}

/// The whole catalog, 50 repositories a page.
async fn walk_catalog(s: &Soak) -> OpResult<()> {
    let mut url = Some(s.registry.url("/v2/_catalog?n=50"));
    while let Some(page) = url {
        url = s.registry.get_page("GET catalog", page).await?.next;
    }
    Ok(())
}
