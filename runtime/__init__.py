"""What every tagscale process shares, below the model: errors, cores and threads, quiet logs."""
