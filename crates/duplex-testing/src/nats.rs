//! A `nats-server` with JetStream for tests (Debian's package; the test
//! command installs it): on a free loopback port, its store in a directory
//! of its own, killed on drop; never the server a machine may already run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server`: on the PATH, or where Debian puts it (/usr/sbin, which a
/// user's PATH may lack).
pub fn program() -> &'static str {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    });
    if on_path {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}

/// A `nats-server` with JetStream, killed on drop.
pub struct Nats {
    child: Child,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    store: PathBuf,
}

impl Nats {
    /// A server on a free port, storing in `store`.
    pub fn start(store: &Path) -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Nats::start_on(port, store)
    }

    /// A server on `port`, storing in `store` (a restart keeps both).
    pub fn start_on(port: u16, store: &Path) -> Nats {
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL) and starts it again on the same port and store.
    pub fn restart(&mut self) {
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
