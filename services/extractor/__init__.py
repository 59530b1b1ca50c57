"""Extractor: chunk messages in, feature messages (MFCC + spectral contrast) out."""
