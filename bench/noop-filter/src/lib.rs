//! A no-op proxy-wasm HTTP filter: the floor of any wasm router.
//!
//! Per request it does the least a router must do: read `:path` from the
//! host (one host call and one copy into the VM) and set one request
//! header naming the upstream (one host call), which Envoy's
//! `cluster_header` route then uses. Nothing is matched. `make bench`
//! compares fallback-config's CPU per request and latency against this
//! floor, so what is left is the cost of fallback-config's own work.
//!
//! The plugin configuration is the upstream (cluster) name, as plain text;
//! the header is `x-fallback-upstream`, as in fallback-config's default.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

/// The header Envoy routes on (`route.cluster_header`).
const UPSTREAM_HEADER: &str = "x-fallback-upstream";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(NoopRoot { upstream: Rc::from("") })
    });
}}

/// Holds the upstream name read at configure time.
struct NoopRoot {
    upstream: Rc<str>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let name = String::from_utf8_lossy(&config).trim().to_string();
        if name.is_empty() {
            proxy_wasm::hostcalls::log(
                LogLevel::Error,
                "noop filter: the plugin configuration must name the upstream",
            )
            .ok();
            return false;
        }
        self.upstream = Rc::from(name);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopFilter {
            upstream: self.upstream.clone(),
        }))
    }
}

/// One request.
struct NoopFilter {
    upstream: Rc<str>,
}

impl Context for NoopFilter {}

impl HttpContext for NoopFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The path is read (and checked) as a router would read it before
        // matching; a request without one is refused.
        match self.get_http_request_header(":path") {
            Some(path) if !path.is_empty() => {
                self.set_http_request_header(UPSTREAM_HEADER, Some(&*self.upstream));
                Action::Continue
            }
            _ => {
                self.send_http_response(400, vec![], Some(b"no :path"));
                Action::Pause
            }
        }
    }
}
