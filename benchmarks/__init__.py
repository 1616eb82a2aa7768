"""lipx.benchmarks."""
