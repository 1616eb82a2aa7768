"""lipx.export."""
