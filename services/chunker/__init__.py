"""Chunker: song claim checks in, 30-second mono PCM chunk messages out."""
