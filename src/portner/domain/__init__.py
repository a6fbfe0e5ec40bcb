"""Portner's domain: pure Python, no framework, no vendor vocabulary."""
