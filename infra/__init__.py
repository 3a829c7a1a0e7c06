"""The top layer: the tagscale command, the explorer, the demo, and cloud job submission."""
