"""Inspecting stored windows: explain and the HTML report."""
