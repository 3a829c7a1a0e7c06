"""Decoding audio: the readers and their checks, and the helper process that runs them."""
