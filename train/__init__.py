"""lipx.train."""
