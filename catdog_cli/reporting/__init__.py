"""Torch-free pictures of records: the HTML report, its SVG plots and heat-map overlays. Imports `data` and
`core` only."""
