"""Where outputs go: files local or on gs://, output checks, staged runs, locks, Parquet shards."""
