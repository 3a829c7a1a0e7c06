"""Running the jobs on Google Cloud: Vertex AI training and the comparison's cloud side."""
