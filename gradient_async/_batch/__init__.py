"""Internals of the batch engine (public API: `gradient_async.batch`). One job per module:
`items` result types, `inputs` prompt normalization,
`progress` progress reporting, `runner` the engine itself."""
