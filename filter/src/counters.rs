//! Request counters, accumulated per worker inside the module and flushed to the
//! host's counters on the worker's tick: no host call per request.
//!
//! Each counter the request path touches has a *slot*: the host-error and
//! override-ignored counters first, then one per member in `counter_index` order for
//! its requests, one for its gRPC errors and one for its REST errors.
//! Counting is an addition in module memory (and, the first time a slot is touched
//! since the last flush, one push onto the dirty list); a flush makes one host call
//! per touched slot, whatever the number of requests behind it.

use crate::host_api::Host;

/// Slot of `modelsplit.host_error`.
pub const HOST_ERROR: usize = 0;
/// Slot of `modelsplit.override_ignored`.
pub const OVERRIDE_IGNORED: usize = 1;
/// Slots before the first member's.
pub const FIXED_SLOTS: usize = 2;

/// The slot of a member's request counter.
pub fn member_slot(counter_index: usize) -> usize {
    FIXED_SLOTS + counter_index
}

/// The slot of a member's gRPC error counter, in a plan of `members` members (after the
/// request counters).
pub fn grpc_error_slot(members: usize, counter_index: usize) -> usize {
    FIXED_SLOTS + members + counter_index
}

/// The slot of a member's REST error counter, in a plan of `members` members (after the
/// gRPC error counters).
pub fn rest_error_slot(members: usize, counter_index: usize) -> usize {
    FIXED_SLOTS + 2 * members + counter_index
}

/// Pending counts of one worker for one plan, and the host's ids of their counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Host counter id per slot; `None` where the host refused to define it.
    ids: Box<[Option<u32>]>,
    /// Counts not yet given to the host, per slot.
    pending: Box<[u64]>,
    /// Slots with a pending count, each once.
    dirty: Vec<usize>,
}

impl Counters {
    /// Counters for these host ids (indexed by slot), all at 0.
    pub fn new(ids: Box<[Option<u32>]>) -> Counters {
        let pending = vec![0; ids.len()].into_boxed_slice();
        Counters {
            ids,
            pending,
            dirty: Vec::new(),
        }
    }

    /// Whether `slot` has its host counter (slots defined at first use start without).
    pub fn has_id(&self, slot: usize) -> bool {
        matches!(self.ids.get(slot), Some(Some(_)))
    }

    /// Gives `slot` the host counter defined for it late.
    pub fn set_id(&mut self, slot: usize, id: u32) {
        if let Some(entry) = self.ids.get_mut(slot) {
            *entry = Some(id);
        }
    }

    /// Counts one event in `slot` (ignored for a slot this plan does not have).
    pub fn count(&mut self, slot: usize) {
        if let Some(n) = self.pending.get_mut(slot) {
            if *n == 0 {
                self.dirty.push(slot);
            }
            *n = n.saturating_add(1);
        }
    }

    /// The count in `slot` not yet flushed.
    pub fn pending(&self, slot: usize) -> u64 {
        self.pending.get(slot).copied().unwrap_or(0)
    }

    /// Whether nothing waits for a flush.
    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Gives every pending count to the host: one host call per touched slot. A count
    /// the host refuses is dropped and counted as a host error (itself dropped if the
    /// host refuses that too, so a broken host never makes the list grow).
    pub fn flush(&mut self, host: &impl Host) {
        let mut refused = 0u64;
        for slot in self.dirty.drain(..) {
            let Some(n) = self.pending.get_mut(slot) else {
                continue;
            };
            let delta = std::mem::take(n);
            if let Some(Some(id)) = self.ids.get(slot) {
                if host.add_to_counter(*id, delta).is_err() && slot != HOST_ERROR {
                    refused += 1;
                }
            }
        }
        if refused > 0 {
            if let Some(Some(id)) = self.ids.get(HOST_ERROR) {
                let _ = host.add_to_counter(*id, refused);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_host::{Call, MockHost};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    fn host_with(names: &[&str]) -> (MockHost, Counters) {
        let host = MockHost::default();
        let ids = names
            .iter()
            .map(|n| Some(host.define_counter(n).unwrap()))
            .collect();
        host.take_calls();
        (host, Counters::new(ids))
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn counts_add_up_in_memory_and_flush_once_per_touched_slot() {
        let (host, mut counters) = host_with(&["err", "ign", "a", "b", "c"]);
        for _ in 0..5 {
            counters.count(member_slot(2));
        }
        counters.count(member_slot(0));
        counters.count(OVERRIDE_IGNORED);
        counters.count(99); // no such slot: ignored
        assert_eq!(counters.pending(member_slot(2)), 5);
        assert!(!counters.is_clean());
        assert_eq!(host.take_calls(), [], "counting makes no host call");
        counters.flush(&host);
        assert_eq!(
            host.take_calls(),
            [Call::add("c", 5), Call::add("a", 1), Call::add("ign", 1)]
        );
        assert!(counters.is_clean());
        assert_eq!(counters.pending(member_slot(2)), 0);
        counters.flush(&host);
        assert_eq!(host.take_calls(), []);
        assert_eq!((host.counter("c"), host.counter("b")), (5, 0));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn undefined_counters_are_skipped_and_refusals_do_not_accumulate() {
        let host = MockHost::default();
        let err = host.define_counter("err").unwrap();
        let mut counters = Counters::new(vec![Some(err), None, None].into_boxed_slice());
        counters.count(member_slot(0));
        counters.flush(&host);
        assert_eq!(host.counter("err"), 0, "an undefined counter is no error");
        host.fail_when(|_| Some(10));
        counters.count(HOST_ERROR);
        counters.flush(&host);
        counters.flush(&host);
        assert!(counters.is_clean());
        assert_eq!(host.take_calls().len(), 2, "one refused add, then nothing");
    }
}
