//! The HTTP context: one per request.

use super::host;
use crate::event::Level;
use crate::worker::{RequestHeader, Verdict, WorkerCache, INTERNAL_ERROR_BODY};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Filter {
    pub cache: Rc<RefCell<WorkerCache>>,
    pub upstream_header: Rc<str>,
}

/// Reads what the worker cache asks for, after `begin` (a request or a
/// tick) said what to look at.
pub fn refresh(cache: &RefCell<WorkerCache>, begin: impl FnOnce(&mut WorkerCache)) {
    let Ok(mut cache) = cache.try_borrow_mut() else {
        return;
    };
    begin(&mut cache);
    while let Some(key) = cache.poll_read() {
        let value = host::shared_get(key);
        cache.handle_read(value.bytes);
    }
    if let Some(event) = cache.take_event() {
        host::log_event(&event);
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = host::request_header(":path");
        refresh(&self.cache, |c| c.begin(&path));
        let Ok(cache) = self.cache.try_borrow() else {
            return Action::Continue;
        };
        let header = |h: RequestHeader| host::request_header(h.name());
        let wall = || host::time().wall;
        let verdict = cache.decide(&path, &header, &wall);
        match verdict {
            Verdict::Forward { upstream } => {
                if let Err(e) = host::set_request_header(&self.upstream_header, upstream) {
                    // Continuing would let a client-sent header pick the upstream.
                    let message = format!("cannot set {}: {e:?}", self.upstream_header);
                    host::log(Level::Warn, &message);
                    let _ = host::send_local_reply(500, INTERNAL_ERROR_BODY);
                    return Action::Pause;
                }
                Action::Continue
            }
            Verdict::Reply { status, body } => {
                if let Err(e) = host::send_local_reply(status, &body) {
                    host::log(Level::Warn, &format!("cannot send the local reply: {e:?}"));
                }
                Action::Pause
            }
        }
    }
}
