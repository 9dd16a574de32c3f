"""Callbacks that commit checkpoints from training frameworks (each imports its framework)."""
