"""The world model: tokenizers, the dynamics transformer, sampling, and its training tasks."""
