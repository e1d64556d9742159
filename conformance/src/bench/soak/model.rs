//! What the registry must hold, as far as the soak knows: every image it
//! pushed and was told succeeded, minus those it deleted, and where each of
//! its tags points.
//!
//! The soak changes this model *before* it sends a delete or a tag move, so
//! a pull that fails with `404` can be judged afterwards: if what it asked
//! for is still in the model, unchanged since the pull began, the registry
//! lost it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::bench::content::Image;

/// An acknowledged image that has not been deleted.
#[derive(Clone)]
pub struct Live {
    pub repo: usize,
    pub image: Arc<Image>,
    pub tags: BTreeSet<String>,
}

/// What a pull asks for, as the model saw it when the pull began.
#[derive(Clone)]
pub struct Target {
    pub id: u64,
    pub repo: usize,
    pub image: Arc<Image>,
    /// Pull by this tag (with the tag's version), or by digest.
    pub tag: Option<(String, u64)>,
}

/// A change the soak is about to make to an image.
pub enum Change {
    /// Delete one tag of the image (it stays, untagged or with others).
    DeleteTag(String),
    /// Delete the image by digest (its tags go with it).
    DeleteImage,
}

/// What the registry must hold at one moment.
pub struct Snapshot {
    /// Every image, by id.
    pub images: Vec<(u64, Live)>,
    /// (repository, tag, the digest it resolves to).
    pub tags: Vec<(usize, String, String)>,
}

#[derive(Default)]
pub struct Model {
    inner: Mutex<Inner>,
}

/// Where a tag points, and since which change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TagState {
    id: u64,
    version: u64,
    /// A move is in flight: the registry may still give the old image.
    moving: bool,
}

#[derive(Default)]
struct Inner {
    /// By id, which grows with every push: the first is the oldest.
    images: BTreeMap<u64, Live>,
    /// (repository, tag) -> where it points.
    tags: HashMap<(usize, String), TagState>,
    /// Bumped by every tag change.
    version: u64,
    /// Digests of every manifest the soak ever sent, per repository.
    sent: HashSet<(usize, String)>,
}

impl Model {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Notes a manifest about to be sent to `repo` (so that a pull by tag
    /// racing a push or tag move can recognise it).
    pub fn sending(&self, repo: usize, digest: &str) {
        self.with(|m| m.sent.insert((repo, digest.to_string())));
    }

    /// Whether the soak ever sent the manifest `digest` to `repo`.
    pub fn was_sent(&self, repo: usize, digest: &str) -> bool {
        self.with(|m| m.sent.contains(&(repo, digest.to_string())))
    }

    /// Records an acknowledged push of `image` under `tag`.
    pub fn pushed(&self, id: u64, repo: usize, tag: &str, image: Arc<Image>) {
        self.with(|m| {
            m.version += 1;
            let state = TagState {
                id,
                version: m.version,
                moving: false,
            };
            m.tags.insert((repo, tag.to_string()), state);
            let tags = BTreeSet::from([tag.to_string()]);
            m.images.insert(id, Live { repo, image, tags });
        });
    }

    pub fn len(&self) -> usize {
        self.with(|m| m.images.len())
    }

    /// The image at position `roll` (modulo the count), by tag when it has
    /// one that is not being moved and `by_tag`.
    pub fn pick(&self, roll: u64, by_tag: bool) -> Option<Target> {
        self.with(|m| {
            let n = m.images.len() as u64;
            let (&id, live) = m.images.iter().nth((roll % n.max(1)) as usize)?;
            let tags = by_tag.then_some(&live.tags).filter(|t| !t.is_empty());
            let tag = tags
                .and_then(|tags| tags.iter().nth((roll >> 16) as usize % tags.len()))
                .map(|t| (t.clone(), m.tags[&(live.repo, t.clone())]))
                .filter(|(_, state)| !state.moving)
                .map(|(t, state)| (t, state.version));
            Some(Target {
                id,
                repo: live.repo,
                image: live.image.clone(),
                tag,
            })
        })
    }

    /// Whether what `target` asked for is still there unchanged: the image
    /// (by digest), or the tag pointing where it pointed.
    pub fn unchanged(&self, target: &Target) -> bool {
        self.with(|m| match &target.tag {
            None => m.images.contains_key(&target.id),
            Some((tag, version)) => {
                let state = m.tags.get(&(target.repo, tag.clone()));
                state.is_some_and(|s| (s.id, s.version, s.moving) == (target.id, *version, false))
            }
        })
    }

    /// Whether any image of `repo` is left.
    pub fn holds_repo(&self, repo: usize) -> bool {
        self.with(|m| m.images.values().any(|l| l.repo == repo))
    }

    /// The oldest image of `repo`, or of any repository.
    pub fn oldest(&self, repo: Option<usize>) -> Option<(u64, Live)> {
        self.with(|m| {
            m.images
                .iter()
                .find(|(_, l)| repo.is_none_or(|r| l.repo == r))
                .map(|(&id, l)| (id, l.clone()))
        })
    }

    /// Two images of `repo` picked by `roll`: one with a tag, and another.
    pub fn pair(&self, repo: usize, roll: u64) -> Option<((u64, Live), (u64, Live))> {
        self.with(|m| {
            let here: Vec<(&u64, &Live)> =
                m.images.iter().filter(|(_, l)| l.repo == repo).collect();
            let tagged: Vec<&(&u64, &Live)> =
                here.iter().filter(|(_, l)| !l.tags.is_empty()).collect();
            if here.len() < 2 || tagged.is_empty() {
                return None;
            }
            let (&from, live_from) = *tagged[(roll % tagged.len() as u64) as usize];
            let others: Vec<_> = here.iter().filter(|(id, _)| **id != from).collect();
            let (&to, live_to) = *others[((roll >> 20) % others.len() as u64) as usize];
            Some(((from, live_from.clone()), (to, live_to.clone())))
        })
    }

    /// Applies `change` to image `id` before the request that makes it.
    pub fn change(&self, id: u64, change: &Change) {
        self.with(|m| {
            m.version += 1;
            let Some(live) = m.images.get_mut(&id) else {
                return;
            };
            let repo = live.repo;
            match change {
                Change::DeleteTag(tag) => {
                    live.tags.remove(tag);
                    m.tags.remove(&(repo, tag.clone()));
                }
                Change::DeleteImage => {
                    let live = m.images.remove(&id).expect("present");
                    for tag in live.tags {
                        m.tags.remove(&(repo, tag));
                    }
                }
            }
        });
    }

    /// Points `tag` of `repo` at image `to` (taking it from whichever image
    /// had it), before the request that moves it.
    pub fn move_tag(&self, repo: usize, tag: &str, to: u64) {
        self.with(|m| {
            m.version += 1;
            let key = (repo, tag.to_string());
            if let Some(TagState { id: from, .. }) = m.tags.get(&key).copied()
                && let Some(live) = m.images.get_mut(&from)
            {
                live.tags.remove(tag);
            }
            if let Some(live) = m.images.get_mut(&to) {
                live.tags.insert(tag.to_string());
                let state = TagState {
                    id: to,
                    version: m.version,
                    moving: true,
                };
                m.tags.insert(key, state);
            }
        });
    }

    /// Ends the move of `tag` of `repo` once its request was answered:
    /// until then the tag is picked by no pull and judged changed, since the
    /// registry may give either image.
    pub fn settled(&self, repo: usize, tag: &str) {
        self.with(|m| {
            m.version += 1;
            if let Some(state) = m.tags.get_mut(&(repo, tag.to_string())) {
                state.version = m.version;
                state.moving = false;
            }
        });
    }

    /// Every image, and every tag with the digest it must resolve to.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|m| Snapshot {
            images: m.images.iter().map(|(&id, l)| (id, l.clone())).collect(),
            tags: m
                .tags
                .iter()
                .map(|((repo, tag), TagState { id, .. })| {
                    (*repo, tag.clone(), m.images[id].image.digest.clone())
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::content::Blob;
    use bytes::Bytes;

    fn image(label: &str) -> Arc<Image> {
        let layer = Blob::from_bytes(Bytes::from(label.to_string()));
        Arc::new(Image::new(label, vec![layer]))
    }

    #[test]
    fn a_pull_is_judged_against_what_changed_since_it_began() {
        let model = Model::default();
        model.pushed(1, 0, "a", image("one"));
        model.pushed(2, 0, "b", image("two"));
        let by_digest = model.pick(0, false).unwrap();
        let by_tag = model.pick(0, true).unwrap();
        assert_eq!(by_tag.tag.as_ref().unwrap().0, "a");
        assert!(model.unchanged(&by_digest) && model.unchanged(&by_tag));

        model.move_tag(0, "a", 2);
        assert!(model.unchanged(&by_digest), "the image is still there");
        assert!(!model.unchanged(&by_tag), "the tag moved");
        let during = model.pick(1, true).unwrap();
        assert!(during.tag.is_none(), "a tag is not pulled while it moves");
        model.settled(0, "a");
        let after = model.pick(1, true).unwrap();
        assert_eq!((after.id, after.tag.as_ref().unwrap().0.as_str()), (2, "a"));
        assert!(model.unchanged(&after));
        let tags = model.snapshot().tags;
        assert!(tags.contains(&(0, "a".into(), image("two").digest.clone())));

        model.change(1, &Change::DeleteImage);
        assert!(!model.unchanged(&by_digest));
        assert_eq!(model.len(), 1);
        assert_eq!(model.oldest(None).unwrap().0, 2);
        let tags = model.snapshot().tags;
        assert_eq!(tags.len(), 2, "a and b are both on image 2");

        model.change(2, &Change::DeleteTag("b".into()));
        let Snapshot { images, tags } = model.snapshot();
        assert_eq!(images[0].1.tags, BTreeSet::from(["a".to_string()]));
        assert_eq!(tags.len(), 1);
    }

    #[test]
    fn pairs_need_two_images_of_the_repository() {
        let model = Model::default();
        model.pushed(1, 0, "a", image("one"));
        model.pushed(2, 1, "b", image("two"));
        assert!(model.pair(0, 7).is_none());
        model.pushed(3, 0, "c", image("three"));
        let ((from, _), (to, _)) = model.pair(0, 7).unwrap();
        assert_ne!(from, to);
        assert!([1, 3].contains(&from) && [1, 3].contains(&to));
    }
}
