"""One module per group of CLI commands; each is a thin wrapper over the library."""
