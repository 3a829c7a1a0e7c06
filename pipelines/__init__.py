"""Beam pipelines over a catalog (featurize, tag) and the readers of their outputs; they build on model/."""
