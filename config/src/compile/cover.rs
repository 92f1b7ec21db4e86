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
//! that exist, so this costs about one walk per route.

use std::collections::HashMap;

use crate::policy::Route;
use crate::template::Segment;

/// A segment trie of route shapes. Literal edges live in one map keyed by (node, text), so
/// nodes themselves allocate nothing.
pub(super) struct Shapes<'s> {
    nodes: Vec<Node>,
    literals: HashMap<(usize, &'s str), usize>,
    /// `shapes[r]`: the segments of route `r`.
    shapes: Vec<&'s [Segment]>,
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
    pub(super) fn with_capacity(routes: usize) -> Self {
        Shapes {
            nodes: vec![Node::default()],
            literals: HashMap::with_capacity(routes * 4),
            shapes: Vec::with_capacity(routes),
            chains: Vec::with_capacity(routes * 6),
            starts: vec![0],
            last_chain: Vec::new(),
        }
    }

    /// The slot for `segments`, creating the nodes leading to it.
    pub(super) fn slot(&mut self, segments: &'s [Segment]) -> Slot {
        let mut at = 0;
        self.last_chain.clear();
        self.last_chain.push(at);
        for segment in segments {
            let next = match segment {
                Segment::Literal(l) => self.literals.get(&(at, l.as_str())).copied(),
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
    pub(super) fn record(&mut self, slot: Slot, segments: &'s [Segment]) -> usize {
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
            covering.clear();
            let chain = &self.chains[self.starts[route]..self.starts[route + 1]];
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

    /// Collects every route that matches all paths matched by `segments`. `chain` is
    /// `Some(nodes)` while the walk is still on the route's own branch, where `nodes[i + 1]`
    /// is the literal child to follow without a lookup.
    fn walk(
        &self,
        at: usize,
        segments: &[Segment],
        i: usize,
        chain: Option<&[usize]>,
        out: &mut Vec<usize>,
    ) {
        let node = &self.nodes[at];
        let rest = &segments[i..];
        // A catch-all here needs one or more remaining segments; a lone trailing "" is none.
        if let Some(route) = node.catch_all
            && !rest.is_empty()
            && rest != [Segment::Literal(String::new())]
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
                    None => self.literals.get(&(at, l.as_str())).copied(),
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
    use crate::template::Template;

    /// Records each template as a route (sharing routes by shape) and returns, per template,
    /// its route and the routes covering it, sorted.
    fn covering(templates: &[&str]) -> Vec<(usize, Vec<usize>)> {
        let parsed: Vec<Template> = templates
            .iter()
            .map(|t| Template::parse(t).unwrap())
            .collect();
        let mut shapes = Shapes::with_capacity(parsed.len());
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
}
