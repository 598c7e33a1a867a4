"""Storage backends behind one small protocol."""
