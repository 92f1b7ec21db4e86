//! `palisade learn`: observed traffic → a proposed allowlist, per peer identity.
//!
//! Takes access-log lines (docs/telemetry.md) one at a time and keeps, per peer, a prefix tree
//! of path segments with per-method call counts and first/last-seen timestamps. Segments that
//! look like identifiers (numbers, UUIDs, hex ids, long tokens) go straight to a `{param}`
//! node; a node whose literal children exceed [`LearnOptions::max_children`] collapses them
//! into one `{param}` child (high cardinality means it is a parameter). Memory is bounded
//! however long the log: peers, depth, children per node and total nodes are all capped, and
//! what does not fit is folded into the nearest existing node (as `{*rest}` when deeper).
//! [`Learner::propose`] passes on policy YAML with the counts as comments for the reviewer.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::yaml_out::{list, quote, slug, unique};
use crate::normalize::normalize;
use crate::policy::{Peer, Policy};
use crate::spiffe::SpiffeId;
use crate::template::Template;

/// Limits of a [`Learner`]. Defaults: 64 children per node, 32 segments deep, 4096 peers,
/// 100 000 nodes.
#[derive(Clone, Debug)]
pub struct LearnOptions {
    /// Distinct literal segments kept under one node before they collapse into `{param}`.
    pub max_children: usize,
    /// Segments kept per path; deeper paths are recorded as `{*rest}` at this depth.
    pub max_depth: usize,
    /// Distinct peers kept; lines from further peers are counted as dropped.
    pub max_peers: usize,
    /// Tree nodes kept over all peers; once reached, new segments fold into `{*rest}`.
    pub max_nodes: usize,
    /// `metadata.name` of the proposed policy.
    pub name: String,
}

/// The fields of an access-log line that learning reads (the others are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct AccessLine {
    /// RFC 3339 UTC; compared as text (the format sorts).
    pub timestamp: String,
    /// The verified SPIFFE ID or `unauthenticated`.
    pub peer_id: String,
    /// The request method.
    pub method: String,
    /// The normalized path; `null` when the target could not be normalized.
    pub path: Option<String>,
    /// `allow`, `deny`, `audit_deny`, `invalid`.
    pub decision: String,
}

/// What [`Learner::observe_line`] did with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineOutcome {
    /// Counted into the proposal.
    Learned,
    /// A `deny` or `invalid` line (enforced denials and malformed targets are not learned).
    Skipped,
    /// The peer limit was reached, or the peer ID is not usable as a principal.
    Dropped,
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// The line is not an access-log JSON object.
    #[error("line {line}: not an access-log line")]
    BadLine {
        /// 1-based line number.
        line: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// The learning state: bounded, see the module documentation.
#[derive(Debug)]
pub struct Learner {
    options: LearnOptions,
    peers: BTreeMap<String, Node>,
    nodes: usize,
    lines: u64,
    skipped: u64,
    dropped: u64,
}

/// Observed calls the current policy would deny, bounded: distinct (peer, method, path) up to a
/// limit, then only counted.
#[derive(Debug)]
pub struct DeniedCalls {
    limit: usize,
    calls: BTreeMap<(String, String, String), (u64, String)>,
    /// Denied calls not kept because the limit was reached.
    pub more: u64,
}

#[derive(Debug, Default)]
struct Node {
    literals: BTreeMap<String, Node>,
    param: Option<Box<Node>>,
    /// Calls that ended here, by method.
    methods: BTreeMap<String, Stats>,
    /// Calls with one or more further segments folded in (`{*rest}`), by method.
    rest: BTreeMap<String, Stats>,
    /// The literal children once exceeded the cap: every new segment here is a `{param}`.
    collapsed: bool,
}

#[derive(Clone, Debug, Default)]
struct Stats {
    count: u64,
    first: String,
    last: String,
}

// === impl LearnOptions ===

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            max_children: 64,
            max_depth: 32,
            max_peers: 4096,
            max_nodes: 100_000,
            name: "learned".to_owned(),
        }
    }
}

// === impl Learner ===

impl Learner {
    /// An empty learner.
    pub fn new(options: LearnOptions) -> Self {
        Learner {
            options,
            peers: BTreeMap::new(),
            nodes: 0,
            lines: 0,
            skipped: 0,
            dropped: 0,
        }
    }

    /// Parses and learns one JSON access-log line; `line_no` is for the error.
    pub fn observe_line(
        &mut self,
        line_no: u64,
        text: &str,
    ) -> Result<(AccessLine, LineOutcome), LearnError> {
        let line: AccessLine =
            serde_json::from_str(text).map_err(|source| LearnError::BadLine {
                line: line_no,
                source,
            })?;
        let outcome = self.observe(&line);
        Ok((line, outcome))
    }

    /// Learns one observation.
    pub fn observe(&mut self, line: &AccessLine) -> LineOutcome {
        self.lines += 1;
        let Some(path) = line.path.as_deref() else {
            self.skipped += 1;
            return LineOutcome::Skipped;
        };
        if line.decision != "allow" && line.decision != "audit_deny" {
            self.skipped += 1;
            return LineOutcome::Skipped;
        }
        if line.peer_id != "unauthenticated" && SpiffeId::parse(&line.peer_id).is_err() {
            self.dropped += 1;
            return LineOutcome::Dropped;
        }
        if !self.peers.contains_key(&line.peer_id) {
            if self.peers.len() >= self.options.max_peers || self.nodes >= self.options.max_nodes {
                self.dropped += 1;
                return LineOutcome::Dropped;
            }
            self.peers.insert(line.peer_id.clone(), Node::default());
            self.nodes += 1;
        }
        let mut segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let folded = segments.len() > self.options.max_depth;
        segments.truncate(self.options.max_depth);
        let options = &self.options;
        let mut nodes = self.nodes;
        if let Some(root) = self.peers.get_mut(&line.peer_id) {
            insert(root, &segments, folded, line, options, &mut nodes);
        }
        self.nodes = nodes;
        LineOutcome::Learned
    }

    /// Tree nodes held now, over all peers (never above [`LearnOptions::max_nodes`] plus one
    /// root per peer).
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Lines seen, skipped (deny/invalid) and dropped (limits, unusable peer).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.lines, self.skipped, self.dropped)
    }

    /// The proposed policy as YAML: one rule per peer, one `to` entry per template, each
    /// preceded by a comment with its calls per method and first/last seen.
    pub fn propose(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# Proposed by `palisade learn` from observed traffic: review before enforcing.\n",
        );
        out.push_str(&format!(
            "# {} lines read, {} skipped (deny or invalid), {} dropped (limits or unusable peer).\n",
            self.lines, self.skipped, self.dropped
        ));
        out.push_str("apiVersion: policy.palisade.dev/v1alpha1\nkind: ApiPolicy\n");
        out.push_str(&format!(
            "metadata: {{ name: {} }}\nspec:\n",
            quote(&self.options.name)
        ));
        out.push_str("  mode: audit   # switch to enforce once reviewed\n");
        if self.peers.contains_key("unauthenticated") {
            out.push_str("  mtls: permissive   # plaintext peers were observed\n");
        }
        if self.peers.is_empty() {
            out.push_str("  rules: []\n");
            return out;
        }
        out.push_str("  rules:\n");
        // All peers' templates share one trie: where any peer's tree ends in `{*rest}`, no
        // peer may keep a `{param}` at that segment (the two cannot start at the same one).
        let mut catch_alls = BTreeSet::new();
        for root in self.peers.values() {
            catch_all_prefixes(root, &mut String::new(), 0, &mut catch_alls);
        }
        let mut taken = BTreeSet::new();
        for (peer, root) in &self.peers {
            let mut routes = Vec::new();
            collect(root, &mut String::new(), 0, &catch_alls, &mut routes);
            if routes.is_empty() {
                continue;
            }
            let name = match SpiffeId::parse(peer) {
                Ok(id) => match (id.namespace(), id.service_account()) {
                    (Some(ns), Some(sa)) => slug(&format!("{ns}-{sa}")),
                    _ => slug(id.path()),
                },
                Err(_) => slug(peer),
            };
            let name = unique(name, &mut taken);
            out.push_str(&format!("    - name: {}\n", quote(&name)));
            out.push_str(&format!(
                "      from: {{ principals: {} }}\n",
                list([peer.as_str()])
            ));
            out.push_str("      to:\n");
            for (template, methods) in routes {
                for (method, stats) in &methods {
                    out.push_str(&format!(
                        "        # {method} {template}: {} calls, first {}, last {}\n",
                        stats.count, stats.first, stats.last
                    ));
                }
                let names: Vec<&str> = methods.keys().map(String::as_str).collect();
                out.push_str(&format!("        - methods: {}\n", list(names)));
                out.push_str(&format!("          paths: {}\n", list([template.as_str()])));
            }
        }
        out
    }
}

fn insert(
    node: &mut Node,
    segments: &[&str],
    folded: bool,
    line: &AccessLine,
    options: &LearnOptions,
    nodes: &mut usize,
) {
    let Some((first, rest)) = segments.split_first() else {
        bump(
            if folded {
                &mut node.rest
            } else {
                &mut node.methods
            },
            line,
        );
        return;
    };
    if (node.collapsed && !node.literals.contains_key(*first)) || is_param(first) {
        if node.param.is_none() {
            if *nodes >= options.max_nodes {
                bump(&mut node.rest, line);
                return;
            }
            node.param = Some(Box::default());
            *nodes += 1;
        }
        if let Some(param) = node.param.as_deref_mut() {
            insert(param, rest, folded, line, options, nodes);
        }
        return;
    }
    if let Some(child) = node.literals.get_mut(*first) {
        insert(child, rest, folded, line, options, nodes);
        return;
    }
    if node.literals.len() >= options.max_children {
        collapse(node, nodes);
        if let Some(param) = node.param.as_deref_mut() {
            insert(param, rest, folded, line, options, nodes);
        }
        return;
    }
    if *nodes >= options.max_nodes {
        bump(&mut node.rest, line);
        return;
    }
    *nodes += 1;
    let child = node.literals.entry((*first).to_owned()).or_default();
    insert(child, rest, folded, line, options, nodes);
}

/// Replaces every literal child of `node` by one `{param}` child holding their merged
/// subtrees; merging never adds nodes, so the count only goes down.
fn collapse(node: &mut Node, nodes: &mut usize) {
    node.collapsed = true;
    let literals = std::mem::take(&mut node.literals);
    let had_param = node.param.is_some();
    let mut param = node.param.take().map_or_else(Node::default, |b| *b);
    let old = literals.values().map(size).sum::<usize>() + if had_param { size(&param) } else { 0 };
    for (_, child) in literals {
        merge(&mut param, child);
    }
    *nodes = (*nodes + size(&param)).saturating_sub(old);
    node.param = Some(Box::new(param));
}

fn merge(into: &mut Node, from: Node) {
    into.collapsed |= from.collapsed;
    for (method, stats) in from.methods {
        merge_stats(into.methods.entry(method).or_default(), &stats);
    }
    for (method, stats) in from.rest {
        merge_stats(into.rest.entry(method).or_default(), &stats);
    }
    for (segment, child) in from.literals {
        match into.literals.get_mut(&segment) {
            Some(existing) => merge(existing, child),
            None => {
                into.literals.insert(segment, child);
            }
        }
    }
    if let Some(child) = from.param {
        match into.param.as_deref_mut() {
            Some(existing) => merge(existing, *child),
            None => into.param = Some(child),
        }
    }
}

fn size(node: &Node) -> usize {
    1 + node.literals.values().map(size).sum::<usize>() + node.param.as_deref().map_or(0, size)
}

fn bump(map: &mut BTreeMap<String, Stats>, line: &AccessLine) {
    let stats = map.entry(line.method.clone()).or_default();
    merge_stats(
        stats,
        &Stats {
            count: 1,
            first: line.timestamp.clone(),
            last: line.timestamp.clone(),
        },
    );
}

fn merge_stats(into: &mut Stats, from: &Stats) {
    if into.count == 0 || from.first < into.first {
        into.first.clone_from(&from.first);
    }
    if into.count == 0 || from.last > into.last {
        into.last.clone_from(&from.last);
    }
    into.count += from.count;
}

/// Merges every call recorded in `node`'s subtree into `into` (for folding under `{*rest}`).
fn fold(node: &Node, into: &mut BTreeMap<String, Stats>) {
    for (method, stats) in node.methods.iter().chain(node.rest.iter()) {
        merge_stats(into.entry(method.clone()).or_default(), stats);
    }
    for child in node.literals.values() {
        fold(child, into);
    }
    if let Some(child) = node.param.as_deref() {
        fold(child, into);
    }
}

type Route = (String, BTreeMap<String, Stats>);

/// Walks the tree and lists each template with its calls per method. `catch_alls` are the
/// prefixes where some peer's tree has `{*rest}`: a `{param}` there is folded into it.
fn collect(
    node: &Node,
    prefix: &mut String,
    params: usize,
    catch_alls: &BTreeSet<String>,
    out: &mut Vec<Route>,
) {
    if !node.methods.is_empty() {
        let template = if prefix.is_empty() {
            "/".to_owned()
        } else {
            prefix.clone()
        };
        out.push((template, node.methods.clone()));
    }
    let len = prefix.len();
    let fold_param = node.param.is_some() && catch_alls.contains(prefix.as_str());
    if !node.rest.is_empty() || fold_param {
        // `{*rest}` and `{param}` cannot start at the same segment: the catch-all takes all.
        let mut merged = node.rest.clone();
        if let Some(param) = node.param.as_deref() {
            fold(param, &mut merged);
        }
        prefix.push_str("/{*rest}");
        out.push((prefix.clone(), merged));
        prefix.truncate(len);
    }
    for (segment, child) in &node.literals {
        prefix.push('/');
        prefix.push_str(segment);
        collect(child, prefix, params, catch_alls, out);
        prefix.truncate(len);
    }
    if let Some(param) = node.param.as_deref()
        && node.rest.is_empty()
        && !fold_param
    {
        prefix.push('/');
        prefix.push_str(&param_name(params));
        collect(param, prefix, params + 1, catch_alls, out);
        prefix.truncate(len);
    }
}

/// Every prefix (as `collect` spells it) under which `node`'s tree has a `{*rest}`.
fn catch_all_prefixes(node: &Node, prefix: &mut String, params: usize, out: &mut BTreeSet<String>) {
    let len = prefix.len();
    if !node.rest.is_empty() {
        out.insert(prefix.clone());
    }
    for (segment, child) in &node.literals {
        prefix.push('/');
        prefix.push_str(segment);
        catch_all_prefixes(child, prefix, params, out);
        prefix.truncate(len);
    }
    if let Some(param) = node.param.as_deref()
        && node.rest.is_empty()
    {
        prefix.push('/');
        prefix.push_str(&param_name(params));
        catch_all_prefixes(param, prefix, params + 1, out);
        prefix.truncate(len);
    }
}

/// The name of the `params`-th parameter on a path: `{id}`, `{id2}`, `{id3}`…
fn param_name(params: usize) -> String {
    if params == 0 {
        "{id}".to_owned()
    } else {
        format!("{{id{}}}", params + 1)
    }
}

/// True for a segment that names one thing among many: a number, a UUID, a hex id, a long
/// token mixing letters and digits, or text that cannot be written as a template literal.
fn is_param(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let bytes = segment.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    if digits == bytes.len() {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    if bytes.len() >= 8 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    let token_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if bytes.len() >= 16 && token_chars && digits > 0 && letters > 0 {
        return true;
    }
    let plain = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
    if plain && segment != "." && segment != ".." {
        return false;
    }
    segment.contains(['{', '}']) || Template::parse(&format!("/{segment}")).is_err()
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

// === impl DeniedCalls ===

impl DeniedCalls {
    /// Keeps up to `limit` distinct denied calls.
    pub fn new(limit: usize) -> Self {
        DeniedCalls {
            limit,
            calls: BTreeMap::new(),
            more: 0,
        }
    }

    /// Decides `line` under `policy` and keeps it if denied. Lines without a path or with an
    /// unusable peer are ignored.
    pub fn check(&mut self, policy: &Policy, line: &AccessLine) {
        let Some(path) = line.path.as_deref() else {
            return;
        };
        let peer = if line.peer_id == "unauthenticated" {
            Peer::Unauthenticated
        } else {
            match SpiffeId::parse(&line.peer_id) {
                Ok(id) => Peer::Spiffe(id),
                Err(_) => return,
            }
        };
        let Ok(target) = normalize(path) else {
            return;
        };
        let decision = policy.decide(&line.method, target.path(), &peer);
        if decision.is_allowed() {
            return;
        }
        let key = (line.peer_id.clone(), line.method.clone(), path.to_owned());
        if let Some(entry) = self.calls.get_mut(&key) {
            entry.0 += 1;
        } else if self.calls.len() < self.limit {
            self.calls.insert(key, (1, decision.to_string()));
        } else {
            self.more += 1;
        }
    }

    /// Each kept call: peer, method, path, count, the decision in words.
    pub fn calls(&self) -> impl Iterator<Item = (&str, &str, &str, u64, &str)> {
        self.calls
            .iter()
            .map(|((peer, method, path), (count, why))| {
                (
                    peer.as_str(),
                    method.as_str(),
                    path.as_str(),
                    *count,
                    why.as_str(),
                )
            })
    }

    /// True when no observed call would be denied.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.more == 0
    }
}

#[cfg(test)]
mod tests;
