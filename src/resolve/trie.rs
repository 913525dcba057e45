//! Wildcard patterns in a segment trie, so matching an event type walks its
//! segments instead of testing every pattern.

use super::index::FastMap;

#[derive(Default, Debug)]
struct Node {
    literal: FastMap<Box<str>, u32>,
    /// Child reached through a `*` that is not the last segment.
    star: Option<u32>,
    /// Entries whose pattern ends here with a final `*` (one or more segments).
    tail: Vec<u32>,
    /// Entries whose pattern ends exactly here.
    end: Vec<u32>,
}

#[derive(Debug)]
pub struct PatternTrie {
    nodes: Vec<Node>,
}

impl Default for PatternTrie {
    fn default() -> Self {
        PatternTrie {
            nodes: vec![Node::default()],
        }
    }
}

impl PatternTrie {
    /// Adds `entry` under a wildcard pattern (segments split on '.').
    pub fn insert(&mut self, pattern: &str, entry: u32) {
        let segments: Vec<&str> = pattern.split('.').collect();
        let mut node = 0usize;
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if *segment == "*" && last {
                self.nodes[node].tail.push(entry);
                return;
            }
            let next = if *segment == "*" {
                self.nodes[node].star
            } else {
                self.nodes[node].literal.get(*segment).copied()
            };
            node = match next {
                Some(n) => n as usize,
                None => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(Node::default());
                    if *segment == "*" {
                        self.nodes[node].star = Some(n);
                    } else {
                        self.nodes[node].literal.insert((*segment).into(), n);
                    }
                    n as usize
                }
            };
        }
        self.nodes[node].end.push(entry);
    }

    /// Removes `entry` from under a wildcard pattern (no-op when absent).
    pub fn remove(&mut self, pattern: &str, entry: u32) {
        let segments: Vec<&str> = pattern.split('.').collect();
        let mut node = 0usize;
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if *segment == "*" && last {
                self.nodes[node].tail.retain(|e| *e != entry);
                return;
            }
            let next = if *segment == "*" {
                self.nodes[node].star
            } else {
                self.nodes[node].literal.get(*segment).copied()
            };
            match next {
                Some(n) => node = n as usize,
                None => return,
            }
        }
        self.nodes[node].end.retain(|e| *e != entry);
    }

    /// Appends every entry whose pattern matches the event type's segments.
    pub fn collect(&self, segments: &[&str], out: &mut Vec<u32>) {
        self.walk(0, segments, out);
    }

    fn walk(&self, node: usize, rest: &[&str], out: &mut Vec<u32>) {
        let n = &self.nodes[node];
        let Some((head, tail)) = rest.split_first() else {
            out.extend_from_slice(&n.end);
            return;
        };
        out.extend_from_slice(&n.tail);
        if let Some(&child) = n.literal.get(*head) {
            self.walk(child as usize, tail, out);
        }
        if let Some(child) = n.star {
            self.walk(child as usize, tail, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(trie: &PatternTrie, event: &str) -> Vec<u32> {
        let segments: Vec<&str> = event.split('.').collect();
        let mut out = Vec::new();
        trie.collect(&segments, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn wildcard_semantics_follow_the_contract() {
        let mut trie = PatternTrie::default();
        trie.insert("command.*", 1);
        trie.insert("*.completed", 2);
        trie.insert("a.*.c", 3);
        trie.insert("*", 4);
        assert_eq!(matches(&trie, "command.completed"), vec![1, 2, 4]);
        assert_eq!(matches(&trie, "command.a.b"), vec![1, 4]);
        assert_eq!(matches(&trie, "command"), vec![4]);
        assert_eq!(matches(&trie, "a.x.c"), vec![3, 4]);
        assert_eq!(matches(&trie, "a.x.y.c"), vec![4]);
        assert_eq!(matches(&trie, "x.y.completed"), vec![4]);
        assert_eq!(matches(&trie, "Command.completed"), vec![2, 4]);
        trie.remove("*.completed", 2);
        trie.remove("*", 4);
        assert_eq!(matches(&trie, "command.completed"), vec![1]);
    }
}
