//! A client that keeps sending one request through an Envoy, on its own
//! thread, and records every answer with the instant it came back, so a
//! scenario can check what clients saw over a whole transition (no config
//! → imported config → CP config) without sampling it by hand at moments
//! that race the filter.

use crate::http;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One answer (or failed request) the probe saw.
#[derive(Clone, Debug)]
pub struct Answer {
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer (or the error) came back.
    pub at: Instant,
    /// `None`: no HTTP answer (see `error`).
    pub status: Option<u16>,
    pub body: String,
    /// The echo upstream's `x-upstream` header, when an upstream answered.
    pub upstream: Option<String>,
    pub error: Option<String>,
}

impl Answer {
    /// `"503 {...}"` or `"error: ..."`, for messages.
    pub fn summary(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) => format!("{s} {}", self.body.trim_end()),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "nothing".into(),
        }
    }

    /// The body parsed as JSON (`Null` when it does not parse).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The running probe. Stops (and joins its thread) on [`Probe::stop`] or
/// drop.
pub struct Probe {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<JoinHandle<()>>,
    path: String,
}

impl Probe {
    /// Sends `GET path` with `headers` to 127.0.0.1:`port` (a fresh
    /// connection each time), then waits `every`, until stopped.
    pub fn start(port: u16, path: &str, headers: &[(&str, &str)], every: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (s, a, p) = (stop.clone(), answers.clone(), path.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("probe {path}"))
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let sent = Instant::now();
                    let answer = match http::get(port, &p, &h) {
                        Ok(r) => Answer {
                            sent,
                            at: Instant::now(),
                            status: Some(r.status),
                            body: r.text(),
                            upstream: r.header("x-upstream").map(str::to_string),
                            error: None,
                        },
                        Err(e) => Answer {
                            sent,
                            at: Instant::now(),
                            status: None,
                            body: String::new(),
                            upstream: None,
                            error: Some(e.to_string()),
                        },
                    };
                    a.lock().unwrap_or_else(|p| p.into_inner()).push(answer);
                    std::thread::sleep(every);
                }
            })
            .ok();
        Probe {
            stop,
            answers,
            thread,
            path: path.to_string(),
        }
    }

    /// The path it requests.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every answer so far, in order.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `n` answers satisfying `pred` came back (at most
    /// `timeout`).
    pub fn wait_for(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Answer) -> bool,
    ) -> Result<(), String> {
        crate::wait::try_until(what, timeout, || {
            let answers = self.answers();
            let k = answers.iter().filter(|a| pred(a)).count();
            if k >= n {
                Ok(())
            } else {
                Err(format!(
                    "{k} of {n}; last: {}",
                    answers.last().map(Answer::summary).unwrap_or_default()
                ))
            }
        })
    }

    /// Stops the probe and returns every answer.
    pub fn stop(mut self) -> Vec<Answer> {
        self.halt();
        self.answers()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How long after one worker serves a new config another may still serve
/// the old one: each loads it at its own root's next tick, so one tick,
/// plus scheduling slack.
pub const WORKER_LAG: Duration =
    fallback_config::process::TICK.saturating_add(Duration::from_millis(100));

/// What clients saw across "no config yet, then a config": the answers
/// before the first `200` and from it on.
#[derive(Clone, Debug)]
pub struct Transition {
    pub before: Vec<Answer>,
    pub after: Vec<Answer>,
}

impl Transition {
    /// When the first `200` came back.
    pub fn first_ok(&self) -> Option<Instant> {
        self.after.first().map(|a| a.at)
    }
}

/// Splits `answers` at the first `200` and checks both sides: before it,
/// only the filter's own `503 {"message": no_config}` (never an upstream);
/// from it on, only `200` from `upstream`, except that a request sent
/// within [`WORKER_LAG`] of the first `200` may still get that `503` (it
/// met a worker that had not ticked since the config was published).
/// `Err` names the first answer that breaks the rule, with its
/// neighbours' summaries.
pub fn split_503_then_200(
    answers: &[Answer],
    no_config: &str,
    upstream: &str,
) -> Result<Transition, String> {
    let cut = answers
        .iter()
        .position(|a| a.status == Some(200))
        .unwrap_or(answers.len());
    let describe = |i: usize| {
        let lo = i.saturating_sub(2);
        let hi = (i + 3).min(answers.len());
        (lo..hi)
            .map(|k| format!("  #{k}: {}", answers[k].summary()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let no_config_503 = |a: &Answer| {
        a.status == Some(503)
            && a.upstream.is_none()
            && a.json()["message"].as_str() == Some(no_config)
    };
    for (i, a) in answers[..cut].iter().enumerate() {
        if !no_config_503(a) {
            return Err(format!(
                "answer #{i} before the first 200 is not the filter's 503 {no_config:?}:\n{}",
                describe(i)
            ));
        }
    }
    let first_ok = answers.get(cut).map(|a| a.at);
    let lagging =
        |a: &Answer| first_ok.is_some_and(|t| a.sent < t + WORKER_LAG) && no_config_503(a);
    for (i, a) in answers.iter().enumerate().skip(cut) {
        let served = a.status == Some(200) && a.upstream.as_deref() == Some(upstream);
        if !served && !lagging(a) {
            return Err(format!(
                "answer #{i}, after the first 200, is not a 200 from {upstream}:\n{}",
                describe(i)
            ));
        }
    }
    Ok(Transition {
        before: answers[..cut].to_vec(),
        after: answers[cut..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, upstream: Option<&str>) -> Answer {
        Answer {
            sent: Instant::now(),
            at: Instant::now(),
            status: Some(status),
            body: body.into(),
            upstream: upstream.map(str::to_string),
            error: None,
        }
    }

    #[test]
    fn splits_at_the_first_200_and_refuses_anything_else() {
        let no = || answer(503, r#"{"message":"none"}"#, None);
        let ok = || answer(200, "echo /x", Some("echo"));
        let t = split_503_then_200(&[no(), no(), ok(), ok()], "none", "echo").unwrap();
        assert_eq!((t.before.len(), t.after.len()), (2, 2));
        let t = split_503_then_200(&[no()], "none", "echo").unwrap();
        assert_eq!((t.before.len(), t.after.len()), (1, 0));
        // A 503 right after the first 200 is a worker yet to tick; one
        // sent a worker's lag later is a config lost again.
        let t = split_503_then_200(&[no(), ok(), no()], "none", "echo").unwrap();
        assert_eq!((t.before.len(), t.after.len()), (1, 2));
        let first = ok();
        let mut late = no();
        late.sent = first.at + WORKER_LAG;
        assert!(split_503_then_200(&[no(), first, late], "none", "echo").is_err());
        let other = answer(503, "upstream connect error", None);
        let e = split_503_then_200(&[no(), other], "none", "echo").unwrap_err();
        assert!(e.contains("#1"), "{e}");
        let wrong = answer(200, "other /x", Some("other"));
        assert!(split_503_then_200(&[no(), wrong], "none", "echo").is_err());
    }
}
