//! The nearest template of a no-route denial: part of the authorize step's answer.
//!
//! Takes the first template of every route (with the length of its literal prefix) at compile
//! time, and a normalized path that matched no route at decide time; passes on the template
//! whose literal prefix shares the longest prefix with the path, for the denial's reason.
//!
//! The literal prefixes are kept sorted; the best candidate is always one of the two neighbours
//! of the path's insertion point. Finding that point by binary search over every prefix costs
//! log₂(routes) string comparisons (15 at 20 000 routes), so a first-level index narrows it:
//! all prefixes starting with the path's first segment (`/svc1/`) are one contiguous range,
//! found with one hash lookup, and the insertion point lies inside it. Paths whose first
//! segment no prefix starts with search all prefixes. Either search first compares 8-byte
//! integer heads of the prefixes and only then strings, among the few with the path's head.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::Range;
use std::sync::Arc;

use crate::fingerprint::Fnv1a;

/// The sorted literal prefixes and their first-segment index.
#[derive(Default)]
pub(crate) struct Nearest {
    /// `(template, literal prefix length)`, sorted by (prefix, template).
    prefixes: Vec<(Arc<str>, usize)>,
    /// First segment with both slashes (`/svc1/`) → the range of `prefixes` starting with it.
    /// Keys come from the policy, never from requests, so an unkeyed hash is fine here.
    by_segment: HashMap<Box<str>, Range<usize>, BuildHasherDefault<Fnv1a>>,
    /// Per prefix: its [`head`] after its first segment (what differs inside a `by_segment`
    /// range), or from its start when it has no first segment.
    heads: Vec<u64>,
    /// Per prefix: its [`head`] from its start, for paths with no indexed first segment.
    heads_from_start: Vec<u64>,
}

// === impl Nearest ===

impl Nearest {
    /// Sorts `prefixes` (`(template, literal prefix length)`) and indexes them.
    pub(crate) fn new(prefixes: Vec<(Arc<str>, usize)>) -> Nearest {
        // Sorted by (head, prefix, template), which is the (prefix, template) order since heads
        // order like the strings they come from; but most comparisons are one integer compare.
        let mut keyed: Vec<(u64, (Arc<str>, usize))> = prefixes
            .into_iter()
            .map(|p| (head(prefix(&p).as_bytes()), p))
            .collect();
        keyed.sort_unstable_by(|(ha, a), (hb, b)| {
            ha.cmp(hb)
                .then_with(|| (prefix(a), &a.0).cmp(&(prefix(b), &b.0)))
        });
        let (heads_from_start, prefixes): (Vec<u64>, Vec<_>) = keyed.into_iter().unzip();
        let mut by_segment: HashMap<Box<str>, Range<usize>, _> = HashMap::default();
        let mut heads = Vec::with_capacity(prefixes.len());
        let mut start = 0;
        while let Some(p) = prefixes.get(start) {
            let segment = first_segment(prefix(p));
            // Prefixes sharing a first segment are adjacent, since the list is sorted.
            let len = prefixes[start..]
                .iter()
                .take_while(|q| segment.is_some() && first_segment(prefix(q)) == segment)
                .count()
                .max(1);
            let skip = segment.map_or(0, str::len);
            heads.extend(
                prefixes[start..start + len]
                    .iter()
                    .map(|q| head(prefix(q).as_bytes().get(skip..).unwrap_or_default())),
            );
            if let Some(segment) = segment {
                by_segment.insert(segment.into(), start..start + len);
            }
            start += len;
        }
        Nearest {
            prefixes,
            by_segment,
            heads,
            heads_from_start,
        }
    }

    /// The template whose literal prefix shares the longest prefix with `path` (on a tie, the
    /// one sorting first); `None` only when there are no routes.
    pub(crate) fn find(&self, path: &str) -> Option<&str> {
        let i = self.insertion_point(path);
        let before = i.checked_sub(1).and_then(|j| self.prefixes.get(j));
        let after = self.prefixes.get(i);
        let score = |c: Option<&(Arc<str>, usize)>| {
            c.map_or(0, |p| {
                prefix(p)
                    .bytes()
                    .zip(path.bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
            })
        };
        let best = if score(after) > score(before) {
            after
        } else {
            before
        };
        best.or(after).map(|(t, _)| &**t)
    }

    /// The index of the first prefix sorting after `path`: the same answer as a binary search
    /// over all prefixes.
    ///
    /// Every prefix starting with the path's first segment `s` is in `by_segment[s]`; every
    /// prefix before that range sorts before all strings starting with `s`, the path included,
    /// and every prefix after it sorts after them. Inside the range (or over all prefixes when
    /// `s` is not indexed), [`head`]s order like the strings they come from, so comparing
    /// integers narrows the range to the prefixes whose head equals the path's; only those are
    /// compared as strings.
    fn insertion_point(&self, path: &str) -> usize {
        let indexed = first_segment(path).and_then(|s| Some((self.by_segment.get(s)?, s.len())));
        let (range, skip, heads) = match indexed {
            Some((range, skip)) => (range.clone(), skip, &self.heads),
            None => (0..self.prefixes.len(), 0, &self.heads_from_start),
        };
        let h = head(path.as_bytes().get(skip..).unwrap_or_default());
        let heads = heads.get(range.clone()).unwrap_or_default();
        let below = heads.partition_point(|&x| x < h);
        let equal = heads
            .get(below..)
            .unwrap_or_default()
            .partition_point(|&x| x == h);
        let start = range.start + below;
        let within = self
            .prefixes
            .get(start..start + equal)
            .unwrap_or_default()
            .partition_point(|p| prefix(p) <= path);
        start + within
    }
}

/// The literal prefix of a `prefixes` element.
fn prefix((template, len): &(Arc<str>, usize)) -> &str {
    template.get(..*len).unwrap_or_default()
}

/// The first 8 bytes of `bytes` as a big-endian integer, zero-padded. If `a <= b` as strings,
/// then `head(a) <= head(b)`; so a head smaller (greater) than the path's means a string
/// smaller (greater) than the path.
fn head(bytes: &[u8]) -> u64 {
    let mut buf = [0; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}

/// `/svc1/` of `/svc1/api/…`: up to and including the second `/`; `None` without one.
fn first_segment(s: &str) -> Option<&str> {
    // A byte loop: segments are short, and `str::find` costs more to set up than to run.
    let end = s.bytes().skip(1).position(|b| b == b'/')? + 2;
    s.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nearest(templates: &[(&str, usize)]) -> Nearest {
        Nearest::new(
            templates
                .iter()
                .map(|&(t, len)| (Arc::from(t), len))
                .collect(),
        )
    }

    /// The answer without the index: a binary search over every prefix.
    fn unindexed(n: &Nearest, path: &str) -> usize {
        n.prefixes.partition_point(|p| prefix(p) <= path)
    }

    #[test]
    fn first_segment_includes_both_slashes() {
        assert_eq!(first_segment("/svc1/api/v1"), Some("/svc1/"));
        assert_eq!(first_segment("/svc1/"), Some("/svc1/"));
        assert_eq!(first_segment("//x"), Some("//"));
        assert_eq!(first_segment("/svc1"), None);
        assert_eq!(first_segment("/"), None);
        assert_eq!(first_segment(""), None);
    }

    #[test]
    fn index_gives_the_same_insertion_point_as_a_full_search() {
        // Prefixes whose first segments sort around each other: `/svc1-x/` sorts before
        // `/svc1/` ('-' < '/'), `/svc1` before both, `/svc10/` after.
        let n = nearest(&[
            ("/svc1", 5),
            ("/svc1-x/{id}", 8),
            ("/svc1/api/{id}", 10),
            ("/svc1/api/v1/items", 18),
            ("/svc1/{*rest}", 6),
            ("/svc10/items/{id}", 13),
            ("/{tenant}/x", 1),
            ("/a", 2),
            ("/b/c", 4),
        ]);
        for path in [
            "/",
            "/a",
            "/a/b",
            "/b",
            "/b/",
            "/b/c",
            "/b/d",
            "/svc",
            "/svc1",
            "/svc1/",
            "/svc1-x/",
            "/svc1-x/9",
            "/svc1/api",
            "/svc1/api/v2/x",
            "/svc1/zzz",
            "/svc10/",
            "/svc10/items",
            "/svc2/x",
            "/z/z",
            "/~",
        ] {
            assert_eq!(n.insertion_point(path), unindexed(&n, path), "{path}");
        }
        assert_eq!(n.find("/svc1/api/v2/x"), Some("/svc1/api/v1/items"));
        assert_eq!(n.find("/svc1/api/a"), Some("/svc1/api/{id}"));
        assert_eq!(n.find("/svc1-x/9/y"), Some("/svc1-x/{id}"));
        assert_eq!(n.find("/svc10/items"), Some("/svc10/items/{id}"));
        assert_eq!(n.find("/b/x"), Some("/b/c"));
        assert_eq!(n.find("/"), Some("/{tenant}/x"));
    }

    #[test]
    fn index_and_heads_agree_with_a_full_search_on_every_combination() {
        // Pieces chosen to collide in the first 8 bytes and to sort around '/'.
        let pieces = [
            "a",
            "a-",
            "ab",
            "abcdefghij",
            "abcdefghik",
            "b",
            "svc1",
            "svc10",
            "",
        ];
        let mut templates = Vec::new();
        for x in pieces {
            templates.push((format!("/{x}"), 1 + x.len()));
            for y in pieces {
                let literal = format!("/{x}/{y}/");
                templates.push((format!("{literal}{{id}}"), literal.len()));
                templates.push((literal.clone(), literal.len()));
            }
        }
        let n = Nearest::new(
            templates
                .iter()
                .map(|(t, len)| (Arc::from(t.as_str()), *len))
                .collect(),
        );
        // Sorting on heads first gives the (prefix, template) order.
        assert!(
            n.prefixes
                .windows(2)
                .all(|w| (prefix(&w[0]), &w[0].0) < (prefix(&w[1]), &w[1].0))
        );
        let mut checked = 0;
        for x in pieces {
            for y in pieces {
                for z in ["", "/", "/c", "/abcdefghij/k"] {
                    let path = format!("/{x}/{y}{z}");
                    assert_eq!(n.insertion_point(&path), unindexed(&n, &path), "{path}");
                    let short = format!("/{x}{z}");
                    assert_eq!(n.insertion_point(&short), unindexed(&n, &short), "{short}");
                    checked += 2;
                }
            }
        }
        assert_eq!(checked, pieces.len() * pieces.len() * 8);
    }

    #[test]
    fn heads_order_like_strings() {
        let words: [&[u8]; 7] = [b"", b"a", b"a\0", b"ab", b"abcdefgh", b"abcdefghz", b"b"];
        for a in words {
            for b in words {
                if a <= b {
                    assert!(head(a) <= head(b), "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn no_routes_have_no_nearest() {
        assert_eq!(Nearest::default().find("/a/b"), None);
        assert_eq!(nearest(&[]).find("/"), None);
    }
}
