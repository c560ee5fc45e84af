"""Adapters: one module per kind of I/O, each translating foreign errors into ours."""
