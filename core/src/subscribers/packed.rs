//! Strings laid end to end in one allocation, the way the index stores an
//! entry's and an endpoint's text.

/// Strings laid end to end in one allocation: a resolve reads all of them,
/// and in an index too big for the CPU cache each allocation it touches is
/// a cache miss (profiles of resolve over 1M subscriptions were dominated
/// by them).
pub(crate) struct Packed<const N: usize> {
    pub(crate) text: Box<str>,
    /// Where each string ends.
    ends: [u32; N],
}

impl<const N: usize> Packed<N> {
    pub(crate) fn new(parts: [&str; N]) -> Self {
        let mut ends = [0; N];
        let mut end = 0;
        for (i, part) in parts.iter().enumerate() {
            end += part.len();
            // Ids, names, URLs and secrets are bounded far below 4 GiB.
            ends[i] = end as u32;
        }
        Packed {
            text: parts.concat().into(),
            ends,
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}
