"""The shared extraction core: sources, decoding, preprocessing, backbones, weights, the
feature engine and its cache, and the Gaussian statistics it streams."""
