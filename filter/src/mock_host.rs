//! A recording [`Host`] for tests: request and response headers and the request body
//! in memory, counters by name, and the list of every call made, in order. Any call can be made to fail
//! with a status, to check that nothing panics and the request passes through.

use crate::headers::HeaderBlock;
use crate::host_api::{Host, HostError, Level};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// One host call, as the filter made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    GetRequestHeaders,
    GetRequestHeader(String),
    SetRequestHeader(String, Vec<u8>),
    RemoveRequestHeader(String),
    /// `(start, len)` asked for.
    GetRequestBody(usize, usize),
    /// `(len replaced, the new prefix)`.
    ReplaceRequestBodyPrefix(usize, Vec<u8>),
    /// `(grpc-status, grpc-message)`.
    SendGrpcError(u32, String),
    SetEffectiveContext(u32),
    ResumeRequest,
    SetResponseHeader(String, Vec<u8>),
    GetResponseHeader(String),
    GetResponseTrailer(String),
    DefineCounter(String),
    /// Counter *name* (resolved from the id) and the amount added.
    AddToCounter(String, u64),
    DefineHistogram(String),
    /// Histogram *name* (resolved from the id) and the value recorded.
    RecordInHistogram(String, u64),
    Now,
    SetTickPeriod(u32),
    PluginConfiguration,
    Log(Level, String),
}

impl Call {
    pub fn get(name: &str) -> Call {
        Call::GetRequestHeader(name.to_string())
    }

    pub fn set(name: &str, value: &str) -> Call {
        Call::SetRequestHeader(name.to_string(), value.as_bytes().to_vec())
    }

    pub fn respond(name: &str, value: &str) -> Call {
        Call::SetResponseHeader(name.to_string(), value.as_bytes().to_vec())
    }

    pub fn add(counter: &str, n: u64) -> Call {
        Call::AddToCounter(counter.to_string(), n)
    }
}

type FailWhen = Box<dyn Fn(&Call) -> Option<u32>>;

#[derive(Default)]
pub struct MockHost {
    pub config: Option<Vec<u8>>,
    pub request: RefCell<Vec<(String, Vec<u8>)>>,
    pub response: RefCell<Vec<(String, Vec<u8>)>>,
    pub trailers: RefCell<Vec<(String, Vec<u8>)>>,
    /// The request body buffered so far.
    pub body: RefCell<Vec<u8>>,
    /// The gRPC error sent, if any: (grpc-status, message).
    pub reply: RefCell<Option<(u32, String)>>,
    /// Contexts that are gone: `set_effective_context` fails for them (status 2).
    pub gone: RefCell<Vec<u32>>,
    /// Metric names by id (id = position; counters and histograms share the ids, as in
    /// Envoy), counter values and the values recorded in each histogram.
    names: RefCell<Vec<String>>,
    values: RefCell<BTreeMap<String, u64>>,
    histograms: RefCell<BTreeMap<String, Vec<u64>>>,
    pub calls: RefCell<Vec<Call>>,
    /// Returns the status to fail a call with, or `None` to let it succeed.
    fail: RefCell<Option<FailWhen>>,
    clock: Cell<u64>,
}

impl MockHost {
    pub fn with_config(json: &str) -> MockHost {
        MockHost::with_raw_config(Some(json.as_bytes()))
    }

    /// `None`: the host has no plugin configuration at all.
    pub fn with_raw_config(config: Option<&[u8]>) -> MockHost {
        MockHost {
            config: config.map(<[u8]>::to_vec),
            clock: Cell::new(1_700_000_000_000_000_000),
            ..MockHost::default()
        }
    }

    /// Starts a new request with these headers; forgets earlier calls and headers.
    pub fn request(&self, headers: &[(&str, &[u8])]) {
        *self.request.borrow_mut() = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        self.response.borrow_mut().clear();
        self.trailers.borrow_mut().clear();
        self.body.borrow_mut().clear();
        *self.reply.borrow_mut() = None;
        self.calls.borrow_mut().clear();
    }

    /// Moves the clock on.
    pub fn advance(&self, nanos: u64) {
        self.clock.set(self.clock.get() + nanos);
    }

    /// Sets the clock (nanoseconds since the Unix epoch; it may go back, as a wall
    /// clock can).
    pub fn set_clock(&self, nanos: u64) {
        self.clock.set(nanos);
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    /// Makes every call for which `when` returns a status fail with it.
    pub fn fail_when(&self, when: impl Fn(&Call) -> Option<u32> + 'static) {
        *self.fail.borrow_mut() = Some(Box::new(when));
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.values.borrow().get(name).copied().unwrap_or(0)
    }

    pub fn defined(&self, name: &str) -> bool {
        self.values.borrow().contains_key(name)
    }

    /// The values recorded in a histogram, in order; `None` when it was never defined.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.histograms.borrow().get(name).cloned()
    }

    /// The id of a metric name: the one it has, else the next.
    fn metric_id(&self, name: &str) -> u32 {
        let mut names = self.names.borrow_mut();
        let id = match names.iter().position(|n| n == name) {
            Some(id) => id,
            None => {
                names.push(name.to_string());
                names.len() - 1
            }
        };
        id as u32
    }

    pub fn request_header_value(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.request.borrow(), name)
    }

    /// The upstream's answer: response headers and trailers as the filter will read them.
    pub fn answer(&self, headers: &[(&str, &str)], trailers: &[(&str, &str)]) {
        let own = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        *self.response.borrow_mut() = own(headers);
        *self.trailers.borrow_mut() = own(trailers);
    }

    pub fn response_header_value(&self, name: &str) -> Option<Vec<u8>> {
        find(&self.response.borrow(), name)
    }

    pub fn logs(&self, level: Level) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Log(l, m) if *l == level => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: Call) -> Result<(), HostError> {
        let status = self.fail.borrow().as_ref().and_then(|f| f(&call));
        self.calls.borrow_mut().push(call);
        match status {
            Some(status) => Err(HostError(status)),
            None => Ok(()),
        }
    }
}

fn find(headers: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn set(headers: &RefCell<Vec<(String, Vec<u8>)>>, name: &str, value: &[u8]) {
    let mut headers = headers.borrow_mut();
    headers.retain(|(k, _)| k != name);
    headers.push((name.to_string(), value.to_vec()));
}

impl Host for MockHost {
    fn request_headers(&self) -> Result<HeaderBlock, HostError> {
        self.record(Call::GetRequestHeaders)?;
        Ok(HeaderBlock::from_pairs(&self.request.borrow()))
    }

    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.record(Call::get(name))?;
        Ok(find(&self.request.borrow(), name))
    }

    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.record(Call::SetRequestHeader(name.to_string(), value.to_vec()))?;
        set(&self.request, name, value);
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.record(Call::RemoveRequestHeader(name.to_string()))?;
        self.request.borrow_mut().retain(|(k, _)| k != name);
        Ok(())
    }

    fn request_body(&self, start: usize, len: usize) -> Result<Vec<u8>, HostError> {
        self.record(Call::GetRequestBody(start, len))?;
        let body = self.body.borrow();
        let end = start.saturating_add(len).min(body.len());
        Ok(body.get(start..end).map(<[u8]>::to_vec).unwrap_or_default())
    }

    fn replace_request_body_prefix(&self, len: usize, with: &[u8]) -> Result<(), HostError> {
        self.record(Call::ReplaceRequestBodyPrefix(len, with.to_vec()))?;
        let mut body = self.body.borrow_mut();
        let len = len.min(body.len());
        body.splice(..len, with.iter().copied());
        Ok(())
    }

    fn send_grpc_error(
        &self,
        grpc_status: u32,
        message: &str,
        _details: &str,
    ) -> Result<(), HostError> {
        self.record(Call::SendGrpcError(grpc_status, message.to_string()))?;
        *self.reply.borrow_mut() = Some((grpc_status, message.to_string()));
        Ok(())
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.record(Call::SetEffectiveContext(context_id))?;
        if self.gone.borrow().contains(&context_id) {
            Err(HostError(2))
        } else {
            Ok(())
        }
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.record(Call::ResumeRequest)
    }

    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.record(Call::SetResponseHeader(name.to_string(), value.to_vec()))?;
        set(&self.response, name, value);
        Ok(())
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.record(Call::GetResponseHeader(name.to_string()))?;
        Ok(find(&self.response.borrow(), name))
    }

    fn response_trailer(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.record(Call::GetResponseTrailer(name.to_string()))?;
        Ok(find(&self.trailers.borrow(), name))
    }

    fn define_counter(&self, name: &str) -> Result<u32, HostError> {
        self.record(Call::DefineCounter(name.to_string()))?;
        let id = self.metric_id(name);
        self.values
            .borrow_mut()
            .entry(name.to_string())
            .or_insert(0);
        Ok(id)
    }

    fn add_to_counter(&self, id: u32, delta: u64) -> Result<(), HostError> {
        let name = self.names.borrow().get(id as usize).cloned();
        let Some(name) = name else {
            self.record(Call::AddToCounter(format!("#{id}"), delta))?;
            return Err(HostError(1));
        };
        self.record(Call::AddToCounter(name.clone(), delta))?;
        *self.values.borrow_mut().entry(name).or_insert(0) += delta;
        Ok(())
    }

    fn define_histogram(&self, name: &str) -> Result<u32, HostError> {
        self.record(Call::DefineHistogram(name.to_string()))?;
        let id = self.metric_id(name);
        self.histograms
            .borrow_mut()
            .entry(name.to_string())
            .or_default();
        Ok(id)
    }

    fn record_in_histogram(&self, id: u32, value: u64) -> Result<(), HostError> {
        let name = self.names.borrow().get(id as usize).cloned();
        let Some(name) = name else {
            self.record(Call::RecordInHistogram(format!("#{id}"), value))?;
            return Err(HostError(1));
        };
        self.record(Call::RecordInHistogram(name.clone(), value))?;
        let mut histograms = self.histograms.borrow_mut();
        let Some(values) = histograms.get_mut(&name) else {
            // A counter's id: Envoy refuses to record in it.
            return Err(HostError(2));
        };
        values.push(value);
        Ok(())
    }

    fn now_nanos(&self) -> Result<u64, HostError> {
        self.record(Call::Now)?;
        Ok(self.clock.get())
    }

    fn set_tick_period(&self, millis: u32) -> Result<(), HostError> {
        self.record(Call::SetTickPeriod(millis))
    }

    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        self.record(Call::PluginConfiguration)?;
        Ok(self.config.clone())
    }

    fn log(&self, level: Level, message: &str) {
        let _ = self.record(Call::Log(level, message.to_string()));
    }
}
