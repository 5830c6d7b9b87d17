"""`catdog check`: what is wrong with a dataset before it costs a training run (leaks and duplicates, likely
label errors, images that should not be there, balance). Reads `data`, uses `models` for frozen backbone
features and `reporting` for its HTML page; beside `inference` (neither imports the other), never imports
`training` or `cli`. Never writes in the data folder."""
