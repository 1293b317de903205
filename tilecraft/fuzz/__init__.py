"""The differential fuzzer: random models, oracle, reducer, campaigns."""
