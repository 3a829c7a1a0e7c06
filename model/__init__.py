"""The model, above runtime/: signal front (dsp), example schema (features), networks, pretrained weights, exports."""
