"""The bottom layer: signal front (dsp), example schema (features), networks, pretrained weights and serving exports."""
