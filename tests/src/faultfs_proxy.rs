//! The object-store counterpart of [`crate::faultfs`]: a loopback TCP proxy in front of the S3
//! server, one per node, so a fault hits one node's requests only. [`FaultProxy::set`] changes
//! what happens to the traffic while the nodes run:
//!
//! - [`NetFault::Hang`]: nothing is forwarded in either direction until the fault is cleared
//!   (requests stall; the node's storage deadline expires).
//! - [`NetFault::Drop`]: every connection is closed at its next byte, and new ones at once.
//! - [`NetFault::LoseResponses`]: requests reach the server, but the connection is closed
//!   before the answer gets back: a conditional write whose outcome the node cannot know.
//! - [`NetFault::Delay`]: each chunk from the node is forwarded this much later.
//!
//! Every loop is bounded by the sockets closing or the proxy being dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the traffic of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NetFault {
    #[default]
    None,
    Hang,
    Drop,
    LoseResponses,
    Delay(Duration),
}

impl NetFault {
    pub fn name(&self) -> String {
        match self {
            NetFault::None => "none".into(),
            NetFault::Hang => "hang".into(),
            NetFault::Drop => "drop".into(),
            NetFault::LoseResponses => "lose-responses".into(),
            NetFault::Delay(d) => format!("delay-{}ms", d.as_millis()),
        }
    }
}

struct Shared {
    fault: Mutex<NetFault>,
    stop: AtomicBool,
    upstream: SocketAddr,
}

impl Shared {
    fn fault(&self) -> NetFault {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A proxy listening on 127.0.0.1; stops (and closes every connection) when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port` on loopback).
    pub fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault: Mutex::new(NetFault::None),
            stop: AtomicBool::new(false),
            upstream,
        });
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(FaultProxy { shared, addr })
    }

    /// `http://127.0.0.1:<port>`: what the node uses as its S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: NetFault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    pub fn get(&self) -> NetFault {
        self.shared.fault()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.fault() == NetFault::Drop {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let s = Arc::clone(&shared);
                let _ = std::thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || connection(client, s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = Arc::clone(&shared);
    let t = std::thread::Builder::new()
        .name("fault-proxy-up".into())
        .spawn(move || pump(c2, s2, &up, true));
    pump(server, client, &shared, false);
    if let Ok(t) = t {
        let _ = t.join();
    }
}

/// Copies `from` to `to` until either closes, applying the fault to each chunk. `upstream`:
/// the node-to-server direction.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, upstream: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    let close = |a: &TcpStream, b: &TcpStream| {
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    };
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return close(&from, &to);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return close(&from, &to),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return close(&from, &to),
        };
        // Hold the chunk while the fault says hang; bounded by the proxy stopping.
        loop {
            match shared.fault() {
                NetFault::Hang if !shared.stop.load(Ordering::SeqCst) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
        match shared.fault() {
            NetFault::Drop => return close(&from, &to),
            NetFault::LoseResponses if !upstream => return close(&from, &to),
            NetFault::Delay(d) if upstream => std::thread::sleep(d),
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            return close(&from, &to);
        }
    }
}
