"""Code the tests and benchmarks share: harnesses over the real services and helpers.

Imported by test modules and bench/ scripts; never imports a test module.
"""
