//! A `nats-server` with JetStream for tests (Debian's package; the test
//! command installs it): on a free loopback port, its store in a directory
//! of its own, killed on drop; never the server a machine may already run.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server`: on the PATH, or where Debian puts it (/usr/sbin, which a
/// user's PATH may lack).
pub(crate) fn program() -> &'static str {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    });
    if on_path {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}

pub(crate) struct Nats {
    child: Child,
    pub(crate) port: u16,
    store: PathBuf,
}

impl Nats {
    /// A server on a free port, storing in `store`.
    pub(crate) fn start(store: &Path) -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Nats::start_on(port, store)
    }

    /// A server on `port`, storing in `store` (a restart keeps both).
    pub(crate) fn start_on(port: u16, store: &Path) -> Nats {
        let child = Command::new(program())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server) must be installed");
        let nats = Nats {
            child,
            port,
            store: store.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL) and starts it again on the same port and store.
    pub(crate) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Nats::start_on(self.port, &self.store.clone());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
