//! A `redis-server` for tests (Debian's package; the test command installs
//! it): on a free loopback port, saving nothing, killed on drop. Shared by
//! duplex-hub's and duplex-cli's tests.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on (as the kernel just handed it out).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on a port of its own, killed on drop.
pub struct Redis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// A `redis-server` on `port`, loopback, saving nothing.
    pub fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// A `redis-server` on `port` with `args` after duplex's own (loopback,
    /// no persistence), once it takes connections on `port`.
    pub fn start_with(port: u16, args: &[&str]) -> Redis {
        Redis::start_logging(port, args, Stdio::null())
    }

    fn start_logging(port: u16, args: &[&str], log: Stdio) -> Redis {
        let port_text = port.to_string();
        let mut all = vec![
            "--bind",
            "127.0.0.1",
            "--port",
            &port_text,
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        all.extend_from_slice(args);
        Redis::spawn_logging(port, &all, log)
    }

    /// `redis-server` with exactly `args`, once `port` takes connections.
    pub fn spawn(port: u16, args: &[&str]) -> Redis {
        Redis::spawn_logging(port, args, Stdio::null())
    }

    /// A `redis-server` on a free port, as [`start`](Self::start), that
    /// writes its log to `log` (the soak keeps it beside its own).
    pub fn start_logged(log: std::fs::File) -> Redis {
        Redis::start_logging(free_port(), &[], log.into())
    }

    fn spawn_logging(port: u16, args: &[&str], log: Stdio) -> Redis {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
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

    /// A `redis-server` on a free port.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli -p port args…`, its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
