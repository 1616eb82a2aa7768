"""lipx.runtime."""
