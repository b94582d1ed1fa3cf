//! `memtracectl`: parse arguments, run, report. Usage errors exit 2 (clap),
//! failures exit 1 with `error: …` and an optional `hint: …` on stderr.

use clap::Parser;
use memtrace_cli::args::Cli;
use memtrace_common::config::Env;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    match memtrace_cli::run(cli, &env, &mut stdout, &mut stderr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            memtrace_cli::report(&err, &mut stderr);
            ExitCode::FAILURE
        }
    }
}
