//! What a run of `duplex bench` prints: one JSON object on stdout with
//! `--json` (the contract `bench/compare.sh` and `bench/fanout.sh` read),
//! otherwise a human summary; with `--json-out FILE` the JSON also goes to
//! a file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::error::BenchError;

/// How every load prints its report.
#[derive(Debug, Clone, Args)]
pub(crate) struct Output {
    /// Print one JSON object on stdout instead of a summary, and no
    /// progress bar.
    #[arg(long)]
    pub(super) json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

/// The outcome of a run.
#[derive(Debug)]
pub(super) struct Report {
    pub(super) json: serde_json::Value,
    pub(super) summary: String,
    /// Whether anything was measured at all (the exit status).
    pub(super) ok: bool,
}

impl Output {
    /// Prints `report` as asked; the exit status says whether anything was
    /// measured.
    pub(super) fn print(&self, report: &Report) -> Result<ExitCode, BenchError> {
        if let Some(path) = &self.json_out {
            std::fs::write(path, format!("{:#}\n", report.json)).map_err(|e| {
                BenchError::Usage(format!("--json-out: cannot write {}: {e}", path.display()))
            })?;
        }
        if self.json {
            println!("{}", report.json);
        } else {
            print!("{}", report.summary);
        }
        Ok(if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// The summary's line of failed connections, with the first one's reason.
pub(super) fn errors_line(errors: u64, first: Option<&str>) -> String {
    match first {
        Some(first) if errors > 0 => format!("  errors     {errors} (first: {first})\n"),
        _ => format!("  errors     {errors}\n"),
    }
}
