"""Test support shared by several test folders."""
