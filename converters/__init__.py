"""Checkpoint converters for audio models, verified against their original implementations."""
