"""Machine learning: the tip classifier and the conditioning agent (torch, CPU)."""
