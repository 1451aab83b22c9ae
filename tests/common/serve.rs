//! A running `kiln serve` for tests: started on an ephemeral port of 127.0.0.1, its log
//! (one line per request) collected, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Kiln;

/// How long the server may take to start, and to log a request after answering it.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `kiln serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// `serving DIR (N files, verified) on http://IP:PORT/`.
    pub start_line: String,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Where it runs; keeps the directory alive.
    pub kiln: Kiln,
}

impl Server {
    /// Run kiln with `args` in `kiln`'s directory and wait for its start line.
    pub fn start_in(kiln: Kiln, args: &[&str]) -> Server {
        let mut child = kiln
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (started, start_line) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("serving ") {
                        let _ = started.send(line.clone());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            start_line: String::new(),
            log,
            kiln,
        };
        let line = start_line.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "kiln serve did not start; its stderr:\n{}",
                server.log.lock().unwrap().join("\n")
            )
        });
        server.addr = line
            .split_once(" on http://")
            .and_then(|(_, url)| url.strip_suffix('/'))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the start line `{line}`"));
        server.start_line = line;
        server
    }

    /// The log line that contains `needle`, waiting for it: the server logs a request after
    /// answering it.
    pub fn log_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log.lock().unwrap().clone();
            if let Some(line) = log.iter().find(|line| line.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with `{needle}`; the log:\n{}",
                log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Server {
    /// Every log line so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
