//! Does the host pass the body to a filter that holds the request headers?
//!
//! Reading a gRPC call's model name needs the body before routing, so the filter holds
//! the headers (`StopIteration`). Envoy honours that only with
//! `allow_on_headers_stop_iteration: true` in the Wasm `PluginConfig` (Envoy 1.35+);
//! otherwise it turns it into `StopAllIterationAndWatermark`, the filter never sees the
//! body and the call would wait forever. Istio's `WasmPlugin` cannot set that field.
//!
//! So each worker finds out: while [`Holding::Unknown`], held requests are watched;
//! the first body callback proves the host works ([`Holding::Works`], for the worker's
//! life); a request held longer than [`HOLD_LIMIT_NANOS`] without one proves it does
//! not ([`Holding::Broken`]): that request is released, routed by its headers alone,
//! and no later request on the worker is held (routing by header only, as before
//! model names were read). Pure bookkeeping here; [`crate::filter`] makes the host calls.

/// How long a held request may wait for its first body callback before the worker
/// concludes that the host does not deliver it.
pub const HOLD_LIMIT_NANOS: u64 = 1_000_000_000;
/// How often the worker looks while requests are watched.
pub const WATCH_TICK_MILLIS: u32 = 200;

/// What the worker knows about its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Unknown,
    Works,
    Broken,
}

/// One worker's watch over held requests (by context id). `R`: where a released
/// request went, kept for its response header.
#[derive(Debug)]
pub struct HoldWatch<R> {
    state: Holding,
    /// Requests held while the state is unknown, with the time they were held.
    held: Vec<(u32, u64)>,
    /// Requests released by the watch, with where they went.
    released: Vec<(u32, R)>,
    reported: bool,
}

impl<R> Default for HoldWatch<R> {
    fn default() -> Self {
        HoldWatch {
            state: Holding::Unknown,
            held: Vec::new(),
            released: Vec::new(),
            reported: false,
        }
    }
}

impl<R> HoldWatch<R> {
    pub fn state(&self) -> Holding {
        self.state
    }

    /// May a request's headers be held? Registers it for watching while the state is
    /// unknown; returns whether it must be watched (the caller then asks for ticks).
    pub fn hold(&mut self, context: u32, now: u64) -> Option<bool> {
        match self.state {
            Holding::Broken => None,
            Holding::Works => Some(false),
            Holding::Unknown => {
                self.held.push((context, now));
                Some(true)
            }
        }
    }

    /// A body callback for a held request. False when the watch released it already
    /// (it was routed by its headers; the body must be left alone).
    pub fn body_arrived(&mut self, context: u32) -> bool {
        if self.released.iter().any(|(c, _)| *c == context) {
            return false;
        }
        if self.state == Holding::Unknown {
            // The host works: no held request needs releasing any more (a slow client's
            // body may take longer than the limit).
            self.state = Holding::Works;
            self.held.clear();
        }
        true
    }

    /// Requests held too long at `now`, removed from the watch; any makes the state broken.
    pub fn expired(&mut self, now: u64) -> Vec<u32> {
        let (late, waiting): (Vec<_>, Vec<_>) = self
            .held
            .iter()
            .partition(|(_, since)| now.saturating_sub(*since) >= HOLD_LIMIT_NANOS);
        self.held = waiting;
        if !late.is_empty() && self.state == Holding::Unknown {
            self.state = Holding::Broken;
        }
        late.into_iter().map(|(c, _)| c).collect()
    }

    /// Records that the watch released `context`, routed to `routed`.
    pub fn release(&mut self, context: u32, routed: R) {
        self.released.push((context, routed));
    }

    /// Where a released request went (once), `None` if the watch never released it.
    pub fn take_released(&mut self, context: u32) -> Option<R> {
        let at = self.released.iter().position(|(c, _)| *c == context)?;
        Some(self.released.swap_remove(at).1)
    }

    /// The request is finished: forget it.
    pub fn gone(&mut self, context: u32) {
        if !self.held.is_empty() {
            self.held.retain(|(c, _)| *c != context);
        }
        if !self.released.is_empty() {
            self.released.retain(|(c, _)| *c != context);
        }
    }

    /// Whether ticks are still needed.
    pub fn watching(&self) -> bool {
        !self.held.is_empty()
    }

    /// True once, the first time the state is broken: log it then.
    pub fn report_broken(&mut self) -> bool {
        let first = self.state == Holding::Broken && !self.reported;
        self.reported |= first;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_body_callback_proves_the_host_for_good() {
        let mut watch = HoldWatch::<Option<(usize, usize)>>::default();
        assert_eq!(watch.hold(1, 0), Some(true));
        assert_eq!(watch.hold(2, 5), Some(true));
        assert!(watch.body_arrived(1));
        assert_eq!(watch.state(), Holding::Works);
        assert_eq!(watch.hold(3, 10), Some(false), "no more watching");
        // A request held before the host was known to work is not released: its body
        // will come (a slow client's, maybe after the limit).
        assert!(!watch.watching());
        watch.gone(2);
        assert_eq!(watch.expired(u64::MAX), Vec::<u32>::new());
        assert_eq!(watch.state(), Holding::Works);
        assert!(!watch.report_broken());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
    fn a_request_held_too_long_proves_the_host_broken() {
        let mut watch = HoldWatch::<Option<(usize, usize)>>::default();
        watch.hold(1, 100);
        watch.hold(2, 100 + HOLD_LIMIT_NANOS / 2);
        assert_eq!(watch.expired(100 + HOLD_LIMIT_NANOS - 1), Vec::<u32>::new());
        assert_eq!(watch.state(), Holding::Unknown);
        assert_eq!(watch.expired(100 + HOLD_LIMIT_NANOS), vec![1]);
        assert_eq!(watch.state(), Holding::Broken);
        assert!(watch.watching(), "2 is still held");
        watch.release(1, Some((0, 1)));
        // Released: its late body is not the filter's any more, and proves nothing.
        assert!(!watch.body_arrived(1));
        assert_eq!(watch.state(), Holding::Broken);
        assert_eq!(watch.take_released(1), Some(Some((0, 1))));
        assert_eq!(watch.take_released(1), None);
        assert_eq!(watch.hold(3, 0), None, "nothing is held any more");
        assert!(watch.report_broken());
        assert!(!watch.report_broken(), "reported once");
        assert_eq!(watch.expired(u64::MAX), vec![2]);
        assert!(!watch.watching());
    }
}
