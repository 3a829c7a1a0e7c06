"""Training and the front-end comparison on featurized shards, with Keras; builds on model/ and never imports Beam."""
