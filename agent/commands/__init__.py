"""One module per `vmaudit` command: add_arguments(parser) and main(args) -> exit status."""
