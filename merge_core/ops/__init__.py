"""Shared tensor math. Every function is batched over a leading module dimension ``N``."""
