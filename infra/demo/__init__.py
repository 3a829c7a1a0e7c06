"""The demo: a synthesized catalog of tagged tracks and the whole chain run over it."""
