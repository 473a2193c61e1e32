//! The one `/proc` sampler of `duplex bench`: the server's CPU time (utime +
//! stime from `/proc/PID/stat`) and resident memory (`VmRSS` of
//! `/proc/PID/status`), summed over the processes given (`--server-pid`,
//! and for a cluster `--server-pids`).

use super::error::BenchError;

/// The server processes a run samples.
#[derive(Debug, Clone, Default)]
pub(super) struct Sampler {
    pids: Vec<u32>,
}

impl Sampler {
    /// Samples `pids` (none: every sample is `None`). Fails now, not after
    /// the run, if a pid cannot be read.
    pub(super) fn new(pids: Vec<u32>) -> Result<Self, BenchError> {
        for &pid in &pids {
            read_cpu_us(pid)?;
        }
        Ok(Sampler { pids })
    }

    pub(super) fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// CPU time so far, in microseconds, summed; `None` without pids. A pid
    /// that can no longer be read (the server exited mid-run) is an error.
    pub(super) fn cpu_us(&self) -> Result<Option<u64>, BenchError> {
        self.sum(read_cpu_us)
    }

    /// Resident set size in bytes, summed, as [`Sampler::cpu_us`].
    pub(super) fn rss(&self) -> Result<Option<u64>, BenchError> {
        self.sum(read_rss)
    }

    fn sum(&self, read: fn(u32) -> Result<u64, BenchError>) -> Result<Option<u64>, BenchError> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        self.pids
            .iter()
            .map(|&pid| read(pid))
            .sum::<Result<u64, _>>()
            .map(Some)
    }
}

/// A process's CPU time so far (user + system), in microseconds, from
/// `/proc/PID/stat`.
fn read_cpu_us(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = read(&path)?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or_else(|| BenchError::Proc {
        path,
        reason: "unexpected format".into(),
    })?;
    Ok(ticks.saturating_mul(1_000_000) / clock_ticks_per_sec())
}

/// A process's resident set size in bytes, from `/proc/PID/status`.
fn read_rss(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    parse_status_rss(&text).ok_or_else(|| BenchError::Proc {
        path,
        reason: "no VmRSS line".into(),
    })
}

fn read(path: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|e| BenchError::Proc {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th from here.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a system constant; it has no preconditions
    // and touches no memory of ours. Tested by `clock_ticks_are_positive`.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// `VmRSS:   1234 kB` → bytes.
fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        let stat = "4242 (my (odd) server) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(175));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        let status = "Name:\tduplex\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss(status), Some(5120 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    /// Our own process, for real: one pid, the same twice (summed), none,
    /// and a pid that does not exist.
    #[test]
    fn samples_are_summed_over_the_pids() {
        let me = std::process::id();
        let one = Sampler::new(vec![me]).unwrap();
        let rss = one.rss().unwrap().unwrap();
        assert!(rss > 0);
        assert!(one.cpu_us().unwrap().is_some());
        let twice = Sampler::new(vec![me, me]).unwrap();
        let (a, b) = (twice.rss().unwrap().unwrap(), one.rss().unwrap().unwrap());
        assert!(a as f64 > 1.5 * b as f64, "{a} vs {b}");
        let none = Sampler::new(Vec::new()).unwrap();
        assert_eq!((none.cpu_us().unwrap(), none.rss().unwrap()), (None, None));
        assert!(Sampler::new(vec![u32::MAX]).is_err());
    }

    /// A server that exits mid-run fails the sample instead of turning
    /// into a missing figure.
    #[test]
    fn a_pid_gone_mid_run_is_an_error() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let sampler = Sampler::new(vec![child.id()]).unwrap();
        assert!(sampler.cpu_us().unwrap().is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(sampler.cpu_us().is_err());
        assert!(sampler.rss().is_err());
    }

    #[test]
    fn clock_ticks_are_positive() {
        assert!(clock_ticks_per_sec() > 0);
    }
}
