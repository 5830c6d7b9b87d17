"""Finding, fetching, decoding and batching images, and how a model wants its pixels. Imports only `core` (and
`errors`): nothing here knows a model."""
