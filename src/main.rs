use clap::Parser;

use hookplane::config::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
        Command::Sign(args) => {
            println!("{}", hookplane::sign::grpcurl_flags(&args)?);
            Ok(())
        }
    }
}
