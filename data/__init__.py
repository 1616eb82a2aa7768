"""lipx.data."""
