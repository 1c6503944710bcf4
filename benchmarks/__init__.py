"""Speed measurements. Run `python -m benchmarks --help`; they print figures, they assert nothing."""
