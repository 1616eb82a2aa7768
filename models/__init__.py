"""lipx.models."""
