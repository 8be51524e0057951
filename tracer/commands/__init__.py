"""One module per CLI sub-command; each defines add_parser(subparsers) and run(args) -> int."""
