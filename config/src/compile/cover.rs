//! Covering routes: making the trie's "most specific route" answer the union of all rules.
//!
//! The route trie returns one route per path, the most specific one (`/admin/health` before
//! `/admin/{*rest}`). An allowlist means "allowed if any rule allows it", so before the
//! policy is frozen every route also receives the entries of each route that *covers* it
//! (matches every path it matches): `/admin/{*rest}` covers `/admin/health`, `/items/{id}`
//! covers `/items/special`. Covering routes are found by walking a small segment trie of all
//! routes, following only branches that exist, so this costs about one walk per route.

use std::collections::HashMap;

use crate::policy::Route;
use crate::template::Segment;

/// A segment trie of route shapes. Literal edges live in one map keyed by (node, text), so
/// nodes themselves allocate nothing.
struct Trie<'s> {
    nodes: Vec<Node>,
    literals: HashMap<(usize, &'s str), usize>,
}

#[derive(Default)]
struct Node {
    param: Option<usize>,
    /// The route whose catch-all starts at this depth.
    catch_all: Option<usize>,
    /// The route that ends exactly here.
    route: Option<usize>,
}

/// Adds to every route the entries of the routes covering it, keeping rule order.
/// `shapes[r]` are the segments of route `r`.
pub(super) fn merge(routes: &mut [Route], shapes: &[Vec<Segment>]) {
    let mut trie = Trie {
        nodes: vec![Node::default()],
        literals: HashMap::with_capacity(shapes.len() * 4),
    };
    for (route, segments) in shapes.iter().enumerate() {
        trie.insert(route, segments);
    }
    let mut merged = Vec::new();
    let mut covering = Vec::new();
    for (route, segments) in shapes.iter().enumerate() {
        covering.clear();
        trie.walk(0, segments, 0, &mut covering);
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

// === impl Trie ===

impl<'s> Trie<'s> {
    fn insert(&mut self, route: usize, segments: &'s [Segment]) {
        let mut at = 0;
        for segment in segments {
            let next = match segment {
                Segment::Literal(l) => self.literals.get(&(at, l.as_str())).copied(),
                Segment::Param(_) => self.nodes[at].param,
                Segment::CatchAll(_) => {
                    self.nodes[at].catch_all = Some(route);
                    return;
                }
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
        }
        self.nodes[at].route = Some(route);
    }

    /// Collects every route that matches all paths matched by `segments`.
    fn walk(&self, at: usize, segments: &[Segment], i: usize, out: &mut Vec<usize>) {
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
                if let Some(&n) = self.literals.get(&(at, l.as_str())) {
                    self.walk(n, segments, i + 1, out);
                }
                if let (false, Some(n)) = (l.is_empty(), node.param) {
                    self.walk(n, segments, i + 1, out);
                }
            }
            Segment::Param(_) => {
                if let Some(n) = node.param {
                    self.walk(n, segments, i + 1, out);
                }
            }
            Segment::CatchAll(_) => {}
        }
    }
}
