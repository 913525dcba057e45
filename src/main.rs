use std::process::ExitCode;

use clap::Parser;

use hookplane::config::{Cli, Command, LogFormat};

// The index holds millions of small allocations and every call makes a few
// dozen more; glibc malloc dominated start-up profiles (consolidation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // SAFETY: before any thread opens a database (the runtime's worker
    // threads have run nothing yet).
    unsafe { hookplane::repository::sqlite_memory_statistics_off() };
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, on one line, without a backtrace.
            eprintln!("hookplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            hookplane::telemetry::init(args.log_format);
            let server = hookplane::startup::start(args).await?;
            server.run_until_signal().await
        }
        Command::Migrate(args) => {
            hookplane::telemetry::init(LogFormat::Text);
            hookplane::startup::connect(&args).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Rekey(args) => {
            hookplane::telemetry::init(LogFormat::Text);
            let report = hookplane::startup::rekey(&args).await?;
            tracing::info!(
                reencrypted = report.reencrypted,
                already_under_the_new_key = report.already,
                "every stored secret is under the new master key"
            );
            Ok(())
        }
        Command::Sign(args) => {
            println!("{}", hookplane::sign::grpcurl_flags(&args)?);
            Ok(())
        }
    }
}
