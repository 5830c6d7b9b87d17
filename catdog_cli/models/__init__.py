"""What a backbone is, how a strategy splits it into parameter groups, what a checkpoint holds. Imports `data`,
`runtime` and `core`, never training or inference."""
