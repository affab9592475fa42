//! Slots for enrollments, fair across issuers: at most `global` in flight, at most
//! `per_group` for one issuer, and free slots handed round-robin to the issuers with queued
//! work — so one slow Command can take its share but never the others'.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Per-issuer FIFO queues served round-robin under two in-flight limits.
pub struct FairQueue<G, K> {
    queues: HashMap<G, VecDeque<K>>,
    ring: VecDeque<G>,
    in_flight: HashMap<G, usize>,
    total: usize,
    global: usize,
    per_group: usize,
}

impl<G: Hash + Eq + Clone, K> FairQueue<G, K> {
    /// Empty, with these limits (each at least 1).
    pub fn new(global: usize, per_group: usize) -> Self {
        Self {
            queues: HashMap::new(),
            ring: VecDeque::new(),
            in_flight: HashMap::new(),
            total: 0,
            global: global.max(1),
            per_group: per_group.max(1),
        }
    }

    /// Queues `key` behind its group.
    pub fn push(&mut self, group: G, key: K) {
        let q = self.queues.entry(group.clone()).or_default();
        if q.is_empty() && !self.ring.contains(&group) {
            self.ring.push_back(group);
        }
        q.push_back(key);
    }

    /// The next key to start, taking a slot of its group; `None` when every slot is taken or
    /// every group with work is at its own limit.
    pub fn pop(&mut self) -> Option<(G, K)> {
        if self.total >= self.global {
            return None;
        }
        for _ in 0..self.ring.len() {
            let group = self.ring.pop_front()?;
            let busy = self.in_flight.get(&group).copied().unwrap_or(0);
            let Some(q) = self.queues.get_mut(&group) else {
                continue;
            };
            if busy >= self.per_group {
                self.ring.push_back(group);
                continue;
            }
            let Some(key) = q.pop_front() else {
                self.queues.remove(&group);
                continue;
            };
            if q.is_empty() {
                self.queues.remove(&group);
            } else {
                self.ring.push_back(group.clone());
            }
            *self.in_flight.entry(group.clone()).or_default() += 1;
            self.total += 1;
            return Some((group, key));
        }
        None
    }

    /// Gives back the slot a popped key of `group` held.
    pub fn done(&mut self, group: &G) {
        if let Some(n) = self.in_flight.get_mut(group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(group);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Keys started and not done yet.
    pub fn in_flight(&self) -> usize {
        self.total
    }

    /// Keys waiting for a slot.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Drops every queued key (in-flight counts stay until `done`).
    #[cfg(test)]
    pub fn clear_queued(&mut self) {
        self.queues.clear();
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut FairQueue<&'static str, u32>) -> Vec<(&'static str, u32)> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn a_busy_issuer_takes_its_share_and_no_more() {
        let mut q = FairQueue::new(4, 3);
        for i in 0..10 {
            q.push("slow", i);
        }
        q.push("fast", 100);
        q.push("fast", 101);
        let started = drain(&mut q);
        assert_eq!(started.len(), 4, "global limit");
        assert_eq!(started.iter().filter(|(g, _)| *g == "slow").count(), 2);
        assert_eq!(started.iter().filter(|(g, _)| *g == "fast").count(), 2);
        // Only the slow issuer has work left: it fills up to its own limit, not beyond.
        q.done(&"fast");
        q.done(&"fast");
        let more = drain(&mut q);
        assert_eq!(more, vec![("slow", 2)]);
        assert_eq!(q.in_flight(), 3);
        // A new fast request gets the free global slot at once.
        q.push("fast", 102);
        assert_eq!(q.pop(), Some(("fast", 102)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn round_robin_keeps_each_issuers_order() {
        let mut q = FairQueue::new(10, 10);
        for (g, k) in [
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("b", 10),
            ("b", 11),
            ("c", 20),
        ] {
            q.push(g, k);
        }
        let order: Vec<u32> = drain(&mut q).into_iter().map(|(_, k)| k).collect();
        assert_eq!(order, vec![1, 10, 20, 2, 11, 3]);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn done_for_an_unknown_group_changes_nothing() {
        let mut q: FairQueue<&str, u32> = FairQueue::new(1, 1);
        q.done(&"x");
        q.push("a", 1);
        assert_eq!(q.pop(), Some(("a", 1)));
        assert_eq!(q.in_flight(), 1);
        q.clear_queued();
        q.done(&"a");
        assert_eq!(q.in_flight(), 0);
    }
}
