"""Bridges to optional frameworks (imported only when used; wvc never needs them)."""
