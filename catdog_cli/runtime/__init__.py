"""Where and how a model runs: the device, precision, torchrun's process group, signals. Imports only `core`."""
