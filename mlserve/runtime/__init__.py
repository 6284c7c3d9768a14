"""In-process model runtime: input validation, vectorized prediction and adaptive batching."""
