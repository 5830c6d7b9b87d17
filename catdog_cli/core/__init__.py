"""Torch-free: configs, defaults, records, events, ranks, paths, formatting. Imports only `errors` and itself;
the CLI imports it before torch loads, so `catdog --help` and `catdog fetch` start at once."""
