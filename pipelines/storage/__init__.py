"""Where outputs go: the filesystem layer (local and gs://), output checks, staged runs, locks, ownership."""
