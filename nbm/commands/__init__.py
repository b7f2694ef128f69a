"""Bodies of the core CLI commands; ``nbm.cli`` parses arguments and imports these lazily."""
