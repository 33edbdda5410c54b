"""One module per ``stae`` subcommand (``stae_deploy.cli.main.COMMANDS`` lists them)."""
