"""Everything Qt. Reaches the engines only through engines.api and engines.registry."""
