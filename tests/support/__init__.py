"""Test helpers shared across test modules (fake servers ...)."""
