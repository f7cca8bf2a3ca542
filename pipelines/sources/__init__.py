"""One module per vendor: how its records map to the canonical model (SPEC §2) and when they are rejected (§4)."""
