//! "What if" transactions: the real rules run against a snapshot with their
//! writes kept in memory and thrown away at the end. Previews, dry runs and
//! the web UI's "deleting this frees" figures run the same code as the
//! deletions themselves, without a writer, on any back end.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{JobCtx, Pair, ReadOps, Reads, Snap, Tx, WriteOps};
use crate::error::Result;

/// A write transaction over a read snapshot whose changes live in memory.
pub struct Overlay<'a> {
    base: &'a dyn ReadOps,
    /// (table, key) -> new value, or `None` for deleted.
    changes: BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>,
    ids: BTreeMap<&'static str, u64>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn ReadOps) -> Overlay<'a> {
        Overlay {
            base,
            changes: BTreeMap::new(),
            ids: BTreeMap::new(),
        }
    }

    /// The changes made, to apply to the base: (table, key, new value or
    /// `None` for deleted), in key order.
    pub fn changes(&self) -> impl Iterator<Item = (&'static str, &[u8], Option<&[u8]>)> {
        self.changes
            .iter()
            .map(|((t, k), v)| (*t, k.as_slice(), v.as_deref()))
    }

    /// The changes within `(from, to)` of `table`, in scan order.
    fn changed(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
    ) -> Vec<(&[u8], Option<&[u8]>)> {
        let lo = match from {
            Bound::Included(k) => Bound::Included((table, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((table, k.to_vec())),
            Bound::Unbounded => Bound::Included((table, Vec::new())),
        };
        let within = |t: &str, k: &[u8]| {
            t == table
                && match to {
                    Bound::Included(e) => k <= e,
                    Bound::Excluded(e) => k < e,
                    Bound::Unbounded => true,
                }
        };
        let mut out: Vec<_> = self
            .changes
            .range((lo, Bound::Unbounded))
            .take_while(|((t, k), _)| within(t, k))
            .map(|((_, k), v)| (k.as_slice(), v.as_deref()))
            .collect();
        if reverse {
            out.reverse();
        }
        out
    }
}

/// Whether `a` comes before `b` in scan order.
fn before(a: &[u8], b: &[u8], reverse: bool) -> bool {
    if reverse { a > b } else { a < b }
}

impl ReadOps for Overlay<'_> {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.changes.get(&(table, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(table, key),
        }
    }

    fn scan(
        &self,
        table: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Pair>> {
        let changed = self.changed(table, from, to, reverse);
        let mut pending = changed.iter().peekable();
        let mut out: Vec<Pair> = Vec::new();
        // Where the next base page starts (scan order).
        let (mut lo, mut hi) = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        'pages: loop {
            let page = self.base.scan(
                table,
                lo.as_ref().map(Vec::as_slice),
                hi.as_ref().map(Vec::as_slice),
                reverse,
                limit.max(1),
            )?;
            let exhausted = page.len() < limit.max(1);
            for (k, v) in page {
                // Changed keys that come first are emitted first.
                while let Some((ck, cv)) = pending.next_if(|(ck, _)| before(ck, &k, reverse)) {
                    if let Some(cv) = cv {
                        out.push((ck.to_vec(), cv.to_vec()));
                    }
                    if out.len() >= limit {
                        break 'pages;
                    }
                }
                let here = pending.next_if(|(ck, _)| *ck == k.as_slice());
                match here {
                    Some((_, Some(cv))) => out.push((k.clone(), cv.to_vec())),
                    Some((_, None)) => {}
                    None => out.push((k.clone(), v)),
                }
                if out.len() >= limit {
                    break 'pages;
                }
                if reverse {
                    hi = Bound::Excluded(k);
                } else {
                    lo = Bound::Excluded(k);
                }
            }
            if exhausted {
                for (ck, cv) in pending.by_ref() {
                    if out.len() >= limit {
                        break;
                    }
                    if let Some(cv) = cv {
                        out.push((ck.to_vec(), cv.to_vec()));
                    }
                }
                break;
            }
        }
        Ok(out)
    }
}

impl WriteOps for Overlay<'_> {
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.changes
            .insert((table, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<()> {
        self.changes.insert((table, key.to_vec()), None);
        Ok(())
    }

    fn next_id(&mut self, table: &'static str) -> Result<u64> {
        let last = match self.ids.get(table) {
            Some(n) => *n,
            None => self
                .scan(table, Bound::Unbounded, Bound::Unbounded, true, 1)?
                .first()
                .map_or(Ok(0), |(k, _)| <u64 as super::Key>::decode(k))?,
        };
        self.ids.insert(table, last + 1);
        Ok(last + 1)
    }
}

/// Runs `f` in a transaction over `snap` that is then thrown away.
pub fn run<R>(snap: &Snap<'_>, f: impl FnOnce(&mut Tx<'_>) -> Result<R>) -> Result<R> {
    let mut overlay = Overlay::new(snap.raw());
    let mut tx = Tx::new(
        &mut overlay,
        JobCtx {
            now_ms: snap.now_ms(),
            shard: 0,
        },
    );
    f(&mut tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;

    /// A base of sorted pairs in memory.
    struct Base(Map<Vec<u8>, Vec<u8>>);

    impl ReadOps for Base {
        fn get(&self, _: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(self.0.get(key).cloned())
        }
        fn scan(
            &self,
            _: &'static str,
            from: Bound<&[u8]>,
            to: Bound<&[u8]>,
            reverse: bool,
            limit: usize,
        ) -> Result<Vec<Pair>> {
            let r = self
                .0
                .range::<[u8], _>((from, to))
                .map(|(k, v)| (k.clone(), v.clone()));
            Ok(if reverse {
                r.rev().take(limit).collect()
            } else {
                r.take(limit).collect()
            })
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// A scan through the overlay equals a scan of the base with the
        /// changes applied, in both directions and at every page size.
        #[test]
        fn scans_merge_changes(
            base in proptest::collection::btree_map(0u8..40, 0u8..9, 0..20),
            changes in proptest::collection::vec((0u8..40, proptest::option::of(0u8..9)), 0..20),
            lo in 0u8..40, span in 0u8..12, reverse: bool, limit in 1usize..8,
        ) {
            let base_rows: Map<Vec<u8>, Vec<u8>> =
                base.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
            let b = Base(base_rows.clone());
            let mut o = Overlay::new(&b);
            let mut expect = base_rows;
            for (k, v) in &changes {
                match v {
                    Some(v) => { o.put("t", &[*k], &[*v]).unwrap(); expect.insert(vec![*k], vec![*v]); }
                    None => { o.delete("t", &[*k]).unwrap(); expect.remove(&vec![*k]); }
                }
            }
            let (lo, hi) = (vec![lo], vec![lo + span]);
            let want: Vec<Pair> = {
                let r = expect.range::<[u8], _>((Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))
                    .map(|(k, v)| (k.clone(), v.clone()));
                if reverse { r.rev().take(limit).collect() } else { r.take(limit).collect() }
            };
            let got = o.scan("t", Bound::Included(&lo), Bound::Excluded(&hi), reverse, limit).unwrap();
            prop_assert_eq!(got, want);
        }
    }
}
