"""Fixture builders shared by the tests: real wheels, sdists and a local package index."""
