"""Counting: windows' counts from slices and stored reference profiles."""
