"""What every pipeline shares: downloads, NWB reading, session writing and the runner."""
