"""The top layer: the tagscale command, the demo and its synthesized catalog, and cloud job submission."""
