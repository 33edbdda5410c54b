"""``stae`` subcommands of the reference side (see ``stae_cli.COMMANDS``)."""
