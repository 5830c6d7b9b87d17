"""Parse, call, render: the Typer app and rich output. Imports the packages below lazily, inside each command,
so that `--help` never loads torch."""
