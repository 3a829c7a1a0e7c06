"""The Beam jobs over a catalog (featurize, tag) and their parts: catalogs, decoding, shards, dead letters, outputs."""
