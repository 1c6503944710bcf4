"""Sandcastle's diffusion engines. Nothing in this package may import Qt."""
