//! Wildcard patterns in a segment trie, so matching an event type walks its
//! segments instead of testing every pattern. It follows
//! [`EventPattern::matches`](crate::EventPattern::matches) exactly; the
//! tests below hold it to that.

#[derive(Default, Debug)]
struct Node {
    /// Children by the id of their literal segment (ids come from the
    /// caller's segment interner, so no string is compared or hashed on the
    /// way down), sorted by id. One allocation: a resolve reads each node's
    /// children from one place in memory.
    literal: Vec<(u32, u32)>,
    /// Child reached through a `*` that is not the last segment.
    star: Option<u32>,
    /// Entries whose pattern ends here with a final `*` (one or more segments).
    tail: Vec<u64>,
    /// Entries whose pattern ends exactly here.
    end: Vec<u64>,
}

impl Node {
    #[inline]
    fn child(&self, segment: u32) -> Option<u32> {
        self.literal
            .binary_search_by_key(&segment, |(s, _)| *s)
            .ok()
            .map(|i| self.literal[i].1)
    }
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
    /// Adds `entry` (any value the caller files entries by) under a
    /// wildcard pattern (segments split on '.'); `segment_id` names each
    /// literal segment.
    pub fn insert(&mut self, pattern: &str, entry: u64, mut segment_id: impl FnMut(&str) -> u32) {
        let segments: Vec<&str> = pattern.split('.').collect();
        let mut node = 0usize;
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if *segment == "*" && last {
                self.nodes[node].tail.push(entry);
                return;
            }
            let id = (*segment != "*").then(|| segment_id(segment));
            let next = match id {
                None => self.nodes[node].star,
                Some(id) => self.nodes[node].child(id),
            };
            node = match next {
                Some(n) => n as usize,
                None => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(Node::default());
                    let parent = &mut self.nodes[node];
                    match id {
                        None => parent.star = Some(n),
                        Some(id) => {
                            let at = parent.literal.partition_point(|(s, _)| *s < id);
                            parent.literal.insert(at, (id, n));
                        }
                    }
                    n as usize
                }
            };
        }
        self.nodes[node].end.push(entry);
    }

    /// Removes `entry` from under a wildcard pattern (no-op when absent).
    pub fn remove(&mut self, pattern: &str, entry: u64, mut segment_id: impl FnMut(&str) -> u32) {
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
                self.nodes[node].child(segment_id(segment))
            };
            match next {
                Some(n) => node = n as usize,
                None => return,
            }
        }
        self.nodes[node].end.retain(|e| *e != entry);
    }

    /// Appends every entry whose pattern matches the event type, given as
    /// the ids of its segments.
    #[inline]
    pub fn collect(&self, segments: &[u32], out: &mut Vec<u64>) {
        self.walk(0, segments, out);
    }

    fn walk(&self, node: usize, rest: &[u32], out: &mut Vec<u64>) {
        let n = &self.nodes[node];
        let Some((head, tail)) = rest.split_first() else {
            out.extend_from_slice(&n.end);
            return;
        };
        out.extend_from_slice(&n.tail);
        if let Some(child) = n.child(*head) {
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

    /// Segment ids as the index's interner hands them out: one per
    /// distinct string.
    #[derive(Default)]
    struct Ids(Vec<String>);

    impl Ids {
        fn id(&mut self, segment: &str) -> u32 {
            match self.0.iter().position(|s| s == segment) {
                Some(i) => i as u32,
                None => {
                    self.0.push(segment.to_owned());
                    (self.0.len() - 1) as u32
                }
            }
        }
    }

    fn matches(trie: &PatternTrie, ids: &mut Ids, event: &str) -> Vec<u64> {
        let segments: Vec<u32> = event.split('.').map(|s| ids.id(s)).collect();
        let mut out = Vec::new();
        trie.collect(&segments, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn wildcard_semantics_follow_the_contract() {
        let mut trie = PatternTrie::default();
        let mut ids = Ids::default();
        trie.insert("command.*", 1, |s| ids.id(s));
        trie.insert("*.completed", 2, |s| ids.id(s));
        trie.insert("a.*.c", 3, |s| ids.id(s));
        trie.insert("*", 4, |s| ids.id(s));
        assert_eq!(matches(&trie, &mut ids, "command.completed"), vec![1, 2, 4]);
        assert_eq!(matches(&trie, &mut ids, "command.a.b"), vec![1, 4]);
        assert_eq!(matches(&trie, &mut ids, "command"), vec![4]);
        assert_eq!(matches(&trie, &mut ids, "a.x.c"), vec![3, 4]);
        assert_eq!(matches(&trie, &mut ids, "a.x.y.c"), vec![4]);
        assert_eq!(matches(&trie, &mut ids, "x.y.completed"), vec![4]);
        assert_eq!(matches(&trie, &mut ids, "Command.completed"), vec![2, 4]);
        trie.remove("*.completed", 2, |s| ids.id(s));
        trie.remove("*", 4, |s| ids.id(s));
        assert_eq!(matches(&trie, &mut ids, "command.completed"), vec![1]);
    }

    /// The trie answers what testing each pattern with
    /// [`EventPattern::matches`](crate::EventPattern::matches) would.
    #[test]
    fn agrees_with_testing_each_pattern() {
        let patterns = [
            "*", "a.*", "*.b", "a.*.c", "*.*", "a.b.*", "*.b.*", "a.*.*", "b.*.a.*", "c",
        ];
        let events = [
            "a", "b", "c", "a.b", "b.b", "a.c", "a.b.c", "a.x.c", "x.b.y", "b.c.a.d", "a.b.c.d",
        ];
        let mut trie = PatternTrie::default();
        let mut ids = Ids::default();
        for (i, p) in patterns.iter().enumerate() {
            if p.contains('*') {
                trie.insert(p, i as u64, |s| ids.id(s));
            }
        }
        for event in events {
            let expected: Vec<u64> = (0..patterns.len())
                .filter(|i| patterns[*i].contains('*'))
                .filter(|i| {
                    crate::EventPattern::parse(patterns[*i])
                        .unwrap()
                        .matches(event)
                })
                .map(|i| i as u64)
                .collect();
            assert_eq!(matches(&trie, &mut ids, event), expected, "{event}");
        }
    }

    #[test]
    fn many_children_of_one_node_are_each_found_and_removed() {
        let mut trie = PatternTrie::default();
        let mut ids = Ids::default();
        // Segment ids handed out out of order, so children are inserted
        // in the middle of the sorted list as well as at its ends.
        for i in [7u32, 2, 9, 0, 5, 3, 8, 1, 6, 4] {
            ids.id(&format!("s{i}"));
        }
        for i in 0..10u64 {
            trie.insert(&format!("s{}.*", (i * 7) % 10), (i * 7) % 10, |s| ids.id(s));
        }
        for i in 0..10u64 {
            assert_eq!(matches(&trie, &mut ids, &format!("s{i}.x")), vec![i]);
        }
        trie.remove("s3.*", 3, |s| ids.id(s));
        assert_eq!(matches(&trie, &mut ids, "s3.x"), Vec::<u64>::new());
        assert_eq!(matches(&trie, &mut ids, "s4.x"), vec![4]);
        assert_eq!(matches(&trie, &mut ids, "s11.x"), Vec::<u64>::new());
    }
}
