"""One training run (setup, loop, finish) and the commands made of runs: resume, lr-find, compare. The top of
the engine: imports everything below, nothing imports it but the CLI."""
