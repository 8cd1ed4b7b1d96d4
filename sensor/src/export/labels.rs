//! Bounded label values: the first `cap` distinct values are kept, later
//! ones fold into `other`, so a fork bomb of random names cannot blow up the
//! metrics.

use std::collections::HashSet;

pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct LabelFolder {
    cap: usize,
    seen: HashSet<String>,
}

impl LabelFolder {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: HashSet::new(),
        }
    }

    pub fn fold<'a>(&mut self, value: &'a str) -> &'a str {
        if self.seen.contains(value) {
            return value;
        }
        if self.seen.len() < self.cap {
            self.seen.insert(value.to_string());
            return value;
        }
        OTHER
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_past_the_cap() {
        let mut f = LabelFolder::new(2);
        assert_eq!(f.fold("a"), "a");
        assert_eq!(f.fold("b"), "b");
        assert_eq!(f.fold("c"), OTHER);
        assert_eq!(f.fold("a"), "a", "known values stay");
        assert_eq!(f.len(), 2);
    }
}
