"""Bytewax dataflows: wiring of sources, the pure fold and sinks."""
