//! Route shapes: one route per canonical template, and covering routes.
//!
//! A segment trie of every route's shape (literal, `{param}`, `{*catch-all}`) does two jobs.
//! While the route trie is built it answers "is there already a route of this shape?", so
//! templates differing only in parameter names share one route without hashing their
//! canonical strings. Then, because the route trie returns only the most specific route for a
//! path (`/admin/health` before `/admin/{*rest}`) while an allowlist means "allowed if any
//! rule allows it", every route receives the entries of each route that *covers* it (matches
//! every path it matches): `/admin/{*rest}` covers `/admin/health`, `/items/{id}` covers
//! `/items/special`. Covering routes are found by walking the trie, following only branches
//! that exist, so this costs about one walk per route, and no walk at all for a route whose own
//! branch passes no parameter edge beside a literal and no other route's catch-all (nothing can
//! cover it).

use std::collections::HashMap;

use foldhash::fast::FixedState;

use crate::policy::Route;
use crate::template::Segment;

/// A segment trie of route shapes. Literal edges live in one map keyed by (node, text), so
/// nodes themselves allocate nothing. The map is probed once per literal segment of every
/// template; it hashes with foldhash's fast unkeyed hasher (the keys are the policy's own
/// literals, never request data, so no keyed hash is needed).
pub(super) struct Shapes<'s> {
    nodes: Vec<Node>,
    literals: HashMap<(usize, &'s str), usize, FixedState>,
    /// `shapes[r]`: the segments of route `r`.
    shapes: Vec<&'s [Segment<&'s str>]>,
    /// `chains[starts[r]..starts[r + 1]]`: the nodes route `r`'s own segments lead through,
    /// from the root. Walking a route's own branch needs no literal lookups.
    chains: Vec<usize>,
    starts: Vec<usize>,
    /// The nodes the last [`Shapes::slot`] call went through.
    last_chain: Vec<usize>,
}

/// Where a shape's route is recorded: the node it ends at, or the node its catch-all starts
/// at (a catch-all is not an edge).
#[derive(Clone, Copy)]
pub(super) enum Slot {
    End(usize),
    CatchAll(usize),
}

#[derive(Default)]
struct Node {
    param: Option<usize>,
    /// The route whose catch-all starts at this depth.
    catch_all: Option<usize>,
    /// The route that ends exactly here.
    route: Option<usize>,
}

// === impl Shapes ===

impl<'s> Shapes<'s> {
    /// Room for up to `routes` routes of `segments` segments in all: each segment adds at
    /// most one node and one chain entry, so nothing grows (and copies) while recording.
    pub(super) fn with_capacity(routes: usize, segments: usize) -> Self {
        let mut nodes = Vec::with_capacity(segments + 1);
        nodes.push(Node::default());
        let mut starts = Vec::with_capacity(routes + 1);
        starts.push(0);
        Shapes {
            nodes,
            literals: HashMap::with_capacity_and_hasher(segments, FixedState::default()),
            shapes: Vec::with_capacity(routes),
            chains: Vec::with_capacity(segments + routes),
            starts,
            last_chain: Vec::new(),
        }
    }

    /// The slot for `segments`, creating the nodes leading to it.
    pub(super) fn slot(&mut self, segments: &'s [Segment<&'s str>]) -> Slot {
        let mut at = 0;
        self.last_chain.clear();
        self.last_chain.push(at);
        for segment in segments {
            let next = match segment {
                Segment::Literal(l) => self.literals.get(&(at, *l)).copied(),
                Segment::Param(_) => self.nodes[at].param,
                Segment::CatchAll(_) => return Slot::CatchAll(at),
            };
            at = match next {
                Some(n) => n,
                None => {
                    self.nodes.push(Node::default());
                    let n = self.nodes.len() - 1;
                    match segment {
                        Segment::Literal(l) => {
                            self.literals.insert((at, l), n);
                        }
                        _ => self.nodes[at].param = Some(n),
                    }
                    n
                }
            };
            self.last_chain.push(at);
        }
        Slot::End(at)
    }

    /// The route already recorded at `slot`, if any.
    pub(super) fn route(&self, slot: Slot) -> Option<usize> {
        match slot {
            Slot::End(n) => self.nodes[n].route,
            Slot::CatchAll(n) => self.nodes[n].catch_all,
        }
    }

    /// Records the next route (index `shapes.len()`) at `slot`, which the last call to
    /// [`Shapes::slot`] returned for `segments`; returns the route's index.
    pub(super) fn record(&mut self, slot: Slot, segments: &'s [Segment<&'s str>]) -> usize {
        let route = self.shapes.len();
        self.shapes.push(segments);
        self.chains.extend_from_slice(&self.last_chain);
        self.starts.push(self.chains.len());
        match slot {
            Slot::End(n) => self.nodes[n].route = Some(route),
            Slot::CatchAll(n) => self.nodes[n].catch_all = Some(route),
        }
        route
    }

    /// Adds to every route the entries of the routes covering it, keeping rule order.
    pub(super) fn merge(&self, routes: &mut [Route]) {
        let mut merged = Vec::new();
        let mut covering = Vec::new();
        for (route, segments) in self.shapes.iter().enumerate() {
            let chain = &self.chains[self.starts[route]..self.starts[route + 1]];
            if !self.may_be_covered(route, segments, chain) {
                continue; // the common case: nothing to walk, nothing to add
            }
            covering.clear();
            self.walk(0, segments, 0, Some(chain), &mut covering);
            covering.retain(|&r| r != route);
            if covering.is_empty() {
                continue; // the common case: nothing to add, nothing to copy
            }
            let mut entries = routes[route].entries.clone();
            entries.extend(
                covering
                    .iter()
                    .flat_map(|&r| routes[r].entries.iter())
                    .cloned(),
            );
            // First match wins in rule order, whichever template the rule used.
            entries.sort_by_key(|e| e.rule);
            merged.push((route, entries));
        }
        for (route, entries) in merged {
            routes[route].entries = entries;
        }
    }

    /// Whether [`Shapes::walk`] can find a route other than `route` itself: it leaves the
    /// route's own branch (`chain`) only through a parameter edge beside a non-empty literal
    /// segment, and on the branch it collects other routes only from a catch-all. A `false`
    /// is exact; a `true` may still find nothing.
    fn may_be_covered(&self, route: usize, segments: &[Segment<&str>], chain: &[usize]) -> bool {
        chain.iter().enumerate().any(|(i, &at)| {
            let node = &self.nodes[at];
            let beside_literal =
                matches!(segments.get(i), Some(Segment::Literal(l)) if !l.is_empty());
            node.catch_all.is_some_and(|r| r != route) || (beside_literal && node.param.is_some())
        })
    }

    /// Collects every route that matches all paths matched by `segments`. `chain` is
    /// `Some(nodes)` while the walk is still on the route's own branch, where `nodes[i + 1]`
    /// is the literal child to follow without a lookup.
    fn walk(
        &self,
        at: usize,
        segments: &[Segment<&str>],
        i: usize,
        chain: Option<&[usize]>,
        out: &mut Vec<usize>,
    ) {
        let node = &self.nodes[at];
        let rest = &segments[i..];
        // A catch-all here needs one or more remaining segments; a lone trailing "" is none.
        if let Some(route) = node.catch_all
            && !rest.is_empty()
            && rest != [Segment::Literal("")]
        {
            out.push(route);
        }
        let Some(segment) = rest.first() else {
            out.extend(node.route);
            return;
        };
        match segment {
            Segment::Literal(l) => {
                let literal = match chain {
                    Some(nodes) => nodes.get(i + 1).copied(),
                    None => self.literals.get(&(at, *l)).copied(),
                };
                if let Some(n) = literal {
                    self.walk(n, segments, i + 1, chain, out);
                }
                if let (false, Some(n)) = (l.is_empty(), node.param) {
                    self.walk(n, segments, i + 1, None, out);
                }
            }
            Segment::Param(_) => {
                if let Some(n) = node.param {
                    // On the route's own branch the parameter edge is the branch.
                    self.walk(n, segments, i + 1, chain, out);
                }
            }
            Segment::CatchAll(_) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::template::TemplateRef;

    /// Records each template as a route (sharing routes by shape) and returns, per template,
    /// its route and the routes covering it, sorted.
    fn covering(templates: &[&str]) -> Vec<(usize, Vec<usize>)> {
        let parsed: Vec<TemplateRef<'_>> = templates
            .iter()
            .map(|t| TemplateRef::parse(t).unwrap())
            .collect();
        let mut shapes = Shapes::with_capacity(parsed.len(), 0);
        let mut route_of = Vec::new();
        for t in &parsed {
            let slot = shapes.slot(t.segments());
            let route = match shapes.route(slot) {
                Some(r) => r,
                None => shapes.record(slot, t.segments()),
            };
            route_of.push(route);
        }
        route_of
            .iter()
            .map(|&r| {
                let chain = &shapes.chains[shapes.starts[r]..shapes.starts[r + 1]];
                let mut out = Vec::new();
                shapes.walk(0, shapes.shapes[r], 0, Some(chain), &mut out);
                out.retain(|&c| c != r);
                out.sort_unstable();
                // `merge` skips the walk when nothing can cover the route: never wrongly.
                assert!(
                    shapes.may_be_covered(r, shapes.shapes[r], chain) || out.is_empty(),
                    "route {r} skipped but covered by {out:?}"
                );
                (r, out)
            })
            .collect()
    }

    #[test]
    fn finds_covering_routes_on_and_off_the_routes_own_branch() {
        let found = covering(&[
            "/a/b/c",     // route 0
            "/a/{x}/c",   // route 1 covers 0 (a literal after a parameter: off 0's branch)
            "/a/{*rest}", // route 2 covers 0, 1 and 4
            "/a/",        // route 3: a lone trailing "" is no segment for the catch-all
            "/a/{y}/c",   // the shape of route 1
            "/a/b/{z}",   // route 4 covers 0
            "/b/{*rest}", // route 5, on another branch
        ]);
        assert_eq!(
            found,
            [
                (0, vec![1, 2, 4]),
                (1, vec![2]),
                (2, vec![]),
                (3, vec![]),
                (1, vec![2]),
                (4, vec![2]),
                (5, vec![]),
            ]
        );
    }

    #[test]
    fn skips_only_routes_nothing_can_cover() {
        // Every template of up to three segments over these pieces, recorded together: the
        // helper asserts for each route that a skipped walk would have found nothing.
        let pieces = ["a", "b", "{p}", "{*r}", ""];
        let mut texts = vec![String::from("/")];
        for x in pieces {
            texts.push(format!("/{x}"));
            for y in pieces {
                texts.push(format!("/{x}/{y}"));
                for z in pieces {
                    texts.push(format!("/{x}/{y}/{z}"));
                }
            }
        }
        let valid: Vec<&str> = texts
            .iter()
            .map(String::as_str)
            .filter(|t| TemplateRef::parse(t).is_ok())
            .collect();
        assert!(valid.len() > 50, "only {} valid templates", valid.len());
        let found = covering(&valid);
        assert!(found.iter().any(|(_, covering)| !covering.is_empty()));
        // Literal-only branches, the shape of most policies, need no walk.
        let parsed: Vec<TemplateRef<'_>> =
            ["/svc1/items/{id}", "/svc1/items/{id}/parts/{p}", "/svc2/x"]
                .iter()
                .map(|t| TemplateRef::parse(t).unwrap())
                .collect();
        let mut shapes = Shapes::with_capacity(parsed.len(), 0);
        for t in &parsed {
            let slot = shapes.slot(t.segments());
            shapes.record(slot, t.segments());
        }
        for r in 0..parsed.len() {
            let chain = &shapes.chains[shapes.starts[r]..shapes.starts[r + 1]];
            assert!(
                !shapes.may_be_covered(r, shapes.shapes[r], chain),
                "route {r}"
            );
        }
    }
}
