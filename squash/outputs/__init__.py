"""Destinations of an export (see `base`)."""
