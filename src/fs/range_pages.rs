//! Lookups in directories too big to keep whole: one listing page answers
//! for every name in its range of keys.
//!
//! A directory's listing is cached for lookups only up to
//! `LISTING_CACHE_ENTRIES` entries, and indexed by name only when it lists
//! in one page (`name_index`). Past that, each lookup asked on its own: a
//! HEAD of the name, and a one-key listing of `name/` unless the name was
//! known as a file, so a `stat` of each file of a directory of a million
//! cost one or two million requests (the listings class C on B2) once the
//! kernel's attributes expired.
//!
//! Instead, a lookup there lists the one page of 1,000 keys that starts
//! just before the name (`start-after` the key without its last
//! character, which sorts before it) and keeps it. The page shows every
//! key between where it starts and the last key it reached, so it says of
//! any name in that range whether it is a file, a directory (`name/`) or
//! nothing, as a complete listing would. A walk in name order (`rsync`,
//! `tar c`, `cp -r` and a `stat` loop over `*` go in readdir's order, which
//! is key order) then costs one listing per 1,000 names, and a HEAD only
//! for versions whose metadata is not known (`known_attrs`).
//!
//! Pages live `metadata_ttl` like listings, at most `RANGE_PAGES` at once,
//! and are dropped when this mount changes the directory.
//!
//! Only a walk in name order gains: `du` sorts the entries of a directory
//! of more than 10,000 by inode number (gnulib's fts does, to save disk
//! seeks), and inode numbers here are hashes of paths, so its lookups come
//! in no order, and a page would answer few of them before it expires. So
//! a directory gets a new page only while its last one answered at least
//! `WORTH_A_PAGE` lookups; otherwise its lookups are asked by name (a
//! HEAD), until a page is tried again `RETRY` later.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::FsResult;
use super::lookup::Listing;
use super::Fs;

/// Pages kept at once, over all directories: 64,000 entries at most.
const RANGE_PAGES: usize = 64;

/// Lookups a page must answer for its directory to get the next one: a
/// listing page is billed as ten HEADs on B2.
const WORTH_A_PAGE: usize = 10;

/// How long a directory walked out of order is asked by name before a
/// page is tried again.
const RETRY: Duration = Duration::from_secs(60);

/// Directories whose last page is remembered.
const WALKED_DIRS: usize = 64;

/// One page of a big directory's listing.
pub(crate) struct RangePage {
    dir: String,
    /// Keys after this one (exclusive) ...
    after: String,
    /// ... up to this one (inclusive) are all in the page; `None`: up to
    /// the end of the directory.
    through: Option<String>,
    /// The page's entries as a names-only listing, so lookups treat it as
    /// they treat a name index.
    pub listing: Arc<Listing>,
    /// Lookups it answered.
    hits: AtomicUsize,
}

impl RangePage {
    fn covers(&self, key: &str) -> bool {
        key > self.after.as_str() && self.through.as_deref().is_none_or(|last| key <= last)
    }

    /// Whether this page tells what `name` is: both its file key and its
    /// directory key (`name/`, which wins over the file) are in range.
    fn answers(&self, dir: &str, file_key: &str) -> bool {
        self.dir == dir && self.covers(file_key) && self.covers(&format!("{file_key}/"))
    }
}

#[derive(Default)]
pub(crate) struct RangePages {
    pages: Mutex<VecDeque<Arc<RangePage>>>,
    /// The directories walked lately.
    last: Mutex<HashMap<String, Walked>>,
}

/// A directory's last page, and since when it is asked by name (a walk
/// out of order).
type Walked = (Arc<RangePage>, Option<Instant>);

impl RangePages {
    fn find(&self, dir: &str, file_key: &str, ttl: Duration) -> Option<Arc<RangePage>> {
        let mut pages = self.pages.lock();
        pages.retain(|p| p.listing.fetched_at.elapsed() < ttl);
        let page = pages
            .iter()
            .rev()
            .find(|p| p.answers(dir, file_key))
            .cloned()?;
        page.hits.fetch_add(1, Ordering::Relaxed);
        Some(page)
    }

    /// Whether `dir` may get a new page: its last one was worth it.
    fn worth_a_page(&self, dir: &str) -> bool {
        let mut last = self.last.lock();
        let Some((page, by_name_since)) = last.get_mut(dir) else {
            return true;
        };
        match by_name_since {
            Some(since) if since.elapsed() < RETRY => false,
            Some(_) => {
                last.remove(dir);
                true
            }
            None if page.hits.load(Ordering::Relaxed) >= WORTH_A_PAGE => true,
            None => {
                *by_name_since = Some(Instant::now());
                false
            }
        }
    }

    fn keep(&self, page: Arc<RangePage>) {
        let mut pages = self.pages.lock();
        if pages.len() >= RANGE_PAGES {
            pages.pop_front();
        }
        pages.push_back(page.clone());
        drop(pages);
        let mut last = self.last.lock();
        if last.len() >= WALKED_DIRS && !last.contains_key(&page.dir) {
            last.clear();
        }
        last.insert(page.dir.clone(), (page, None));
    }

    /// This mount changed something in `dir`: its pages may not show it.
    pub(crate) fn forget_dir(&self, dir: &str) {
        self.pages.lock().retain(|p| p.dir != dir);
    }
}

impl Fs {
    /// The page of big directory `dir_path`'s listing that tells what
    /// `name` is: a kept one, or the one listed from just before the name.
    /// `None` when even that page does not reach `name/` (a thousand keys
    /// sort between `name` and `name/`): the caller asks by name.
    pub(crate) async fn range_page(
        &self,
        dir_path: &str,
        name: &str,
    ) -> FsResult<Option<Arc<RangePage>>> {
        let prefix = self.dir_prefix(dir_path);
        let file_key = format!("{prefix}{name}");
        if let Some(page) = self
            .range_pages
            .find(dir_path, &file_key, self.config.metadata_ttl)
        {
            return Ok(Some(page));
        }
        if !self.range_pages.worth_a_page(dir_path) {
            return Ok(None);
        }
        // The key without its last character sorts before it (and is the
        // directory's own prefix for a one-character name).
        let mut after = file_key.clone();
        after.pop();
        let epoch = self.listing_epoch();
        let mut pages = self.dir_pages_after(dir_path, &after);
        let Some(page) = self.next_dir_page(&mut pages).await? else {
            return Ok(None);
        };
        let entries = self.listed_entries(
            dir_path,
            &prefix,
            page.files.into_iter().collect(),
            page.dirs,
        );
        let page = Arc::new(RangePage {
            dir: dir_path.to_owned(),
            after,
            through: (!pages.done).then_some(page.last_key),
            listing: Arc::new(Listing {
                entries,
                fetched_at: Instant::now(),
                names_only: true,
            }),
            // This lookup.
            hits: AtomicUsize::new(1),
        });
        if !page.answers(dir_path, &file_key) {
            return Ok(None);
        }
        // Listed across a change made here: used for this lookup, not kept.
        if self.listing_epoch() == epoch {
            self.range_pages.keep(page.clone());
        }
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn page(after: &str, through: Option<&str>) -> RangePage {
        RangePage {
            dir: "d".into(),
            after: after.into(),
            through: through.map(str::to_owned),
            listing: Arc::new(Listing {
                entries: BTreeMap::new(),
                fetched_at: Instant::now(),
                names_only: true,
            }),
            hits: AtomicUsize::new(0),
        }
    }

    #[test]
    fn a_page_answers_for_names_whose_file_and_directory_keys_it_covers() {
        let p = page("d/f00", Some("d/f10"));
        assert!(p.answers("d", "d/f001"));
        assert!(p.answers("d", "d/f05"));
        // "d/f00" itself is before the page.
        assert!(!p.answers("d", "d/f00"));
        // "d/f10" is its last key, but "d/f10/" sorts after it.
        assert!(!p.answers("d", "d/f10"));
        assert!(!p.answers("e", "d/f05"));
        let last = page("d/f00", None);
        assert!(last.answers("d", "d/zzz"));
    }

    #[test]
    fn a_directory_walked_out_of_order_is_asked_by_name_for_a_while() {
        let pages = RangePages::default();
        let ttl = Duration::from_secs(60);
        assert!(pages.worth_a_page("d"), "the first page is tried");
        pages.keep(Arc::new(page("d/f00", Some("d/f10"))));
        for _ in 0..WORTH_A_PAGE - 1 {
            assert!(pages.find("d", "d/f05", ttl).is_some());
        }
        assert!(!pages.worth_a_page("d"), "too few lookups answered");
        assert!(!pages.worth_a_page("d"), "and then for a while");
        assert!(pages.worth_a_page("e"));
        let in_order = RangePages::default();
        in_order.keep(Arc::new(page("d/f10", Some("d/f20"))));
        for _ in 0..WORTH_A_PAGE {
            assert!(in_order.find("d", "d/f15", ttl).is_some());
        }
        assert!(in_order.worth_a_page("d"), "a walk in order goes on");
    }
}
