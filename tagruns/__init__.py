"""Readers of tag runs, no Beam pipeline: query, similar, probe, calibrate, evaluate, diff, labels."""
