//! The observer: one thread per node asks `GET /v1/server/ha/state` about every 10 ms and
//! records what came back, with the time the request was sent and the time the answer arrived.
//! The node answered at some instant in `[sent, received]`; the checker relies on nothing more.

use crate::checker::History;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The answer recorded when the request failed (refused, reset, timed out).
pub const DOWN: &str = "DOWN";

/// One observation of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The observer's name for the node (usually its `--node-name`).
    pub node: String,
    /// Just before the request was sent.
    pub sent: Instant,
    /// Just after the answer (or the failure) arrived.
    pub received: Instant,
    /// The state without quotes (`MASTER`, `STANDBY`, …), `DOWN` when the request failed,
    /// `HTTP <code>` for another status, `BAD <body>` for a body that is not a JSON string.
    pub answer: String,
    /// The `X-HA-Epoch` header, when present.
    pub epoch: Option<u64>,
}

impl Sample {
    pub fn is_master(&self) -> bool {
        self.answer == "MASTER"
    }
    pub fn is_down(&self) -> bool {
        self.answer == DOWN
    }
}

/// Samples nodes in the background until stopped.
pub struct Observer {
    origin: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    targets: HashSet<String>,
    period: Duration,
    timeout: Duration,
}

impl Observer {
    /// An observer with no targets yet; add them with [`Observer::add`].
    pub fn new() -> Self {
        Observer {
            origin: Instant::now(),
            samples: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            targets: HashSet::new(),
            period: Duration::from_millis(10),
            timeout: Duration::from_millis(200),
        }
    }

    /// The instant the observer was created (the zero of timelines and messages).
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Starts sampling `url` (the full state URL) under the name `node`. Adding a name twice
    /// is a no-op (a restarted node keeps its port and its sampler).
    pub fn add(&mut self, node: &str, url: &str) {
        if !self.targets.insert(node.to_string()) {
            return;
        }
        let node = node.to_string();
        let url = url.to_string();
        let samples = Arc::clone(&self.samples);
        let stop = Arc::clone(&self.stop);
        let (period, timeout) = (self.period, self.timeout);
        let handle = std::thread::Builder::new()
            .name(format!("observe-{node}"))
            .spawn(move || sample_loop(&node, &url, period, timeout, &samples, &stop))
            .expect("spawn observer thread");
        self.threads.push(handle);
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        History::new(self.origin, samples)
    }

    /// Stops every sampler and returns the whole history.
    pub fn stop(&mut self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.history()
    }
}

impl Default for Observer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One blocking `GET` of a state URL: (answer, epoch) as recorded in a [`Sample`].
pub fn query_state(agent: &ureq::Agent, url: &str) -> (String, Option<u64>) {
    match agent.get(url).call() {
        Err(_) => (DOWN.to_string(), None),
        Ok(mut resp) => {
            let epoch = resp
                .headers()
                .get("x-ha-epoch")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok());
            let status = resp.status().as_u16();
            let body = match resp.body_mut().read_to_string() {
                Ok(b) => b,
                Err(_) => return (DOWN.to_string(), epoch),
            };
            if status != 200 {
                return (format!("HTTP {status}"), epoch);
            }
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(serde_json::Value::String(s)) => (s, epoch),
                _ => (format!("BAD {}", body.trim()), epoch),
            }
        }
    }
}

fn sample_loop(
    node: &str,
    url: &str,
    period: Duration,
    timeout: Duration,
    samples: &Mutex<Vec<Sample>>,
    stop: &AtomicBool,
) {
    let agent = agent(timeout);
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let (answer, epoch) = query_state(&agent, url);
        let received = Instant::now();
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sample {
                node: node.to_string(),
                sent,
                received,
                answer,
                epoch,
            });
        let next = sent + period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-connection-at-a-time HTTP server answering `body` with `X-HA-Epoch: 7`.
    fn fake_node(body: &'static str) -> (String, Arc<AtomicBool>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{}", l.local_addr().unwrap(), crate::STATE_PATH);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return; // dropping the listener: later requests are refused
                }
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-ha-epoch: 7\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes());
            }
        });
        (url, stop)
    }

    #[test]
    fn samples_answers_epochs_and_failures() {
        let (url, stop) = fake_node("\"MASTER\"");
        let mut obs = Observer::new();
        obs.add("a", &url);
        obs.add("a", &url); // no second sampler
        obs.add("gone", "http://127.0.0.1:1/v1/server/ha/state");
        assert!(crate::wait_until(Duration::from_secs(5), || {
            let h = obs.history();
            h.of("a").filter(|s| s.is_master()).count() >= 5 && h.of("gone").count() >= 5
        }));
        stop.store(true, Ordering::SeqCst);
        let h = obs.stop();
        let a: Vec<_> = h.of("a").filter(|s| s.is_master()).collect();
        assert!(a.iter().all(|s| s.epoch == Some(7) && s.sent <= s.received));
        assert!(h.of("gone").all(|s| s.is_down() && s.epoch.is_none()));
        // About one sample per 10 ms, from one thread per node.
        let spread = a.last().unwrap().sent - a.first().unwrap().sent;
        assert!(spread >= Duration::from_millis(10) * (a.len() as u32 - 1));
        assert_eq!(h.violations(), vec![]);
    }

    #[test]
    fn a_body_that_is_not_a_json_string_is_recorded_as_bad() {
        let (url, _stop) = fake_node("{\"x\":1}");
        let agent = agent(Duration::from_millis(500));
        let (answer, epoch) = query_state(&agent, &url);
        assert_eq!(answer, "BAD {\"x\":1}");
        assert_eq!(epoch, Some(7));
    }
}
