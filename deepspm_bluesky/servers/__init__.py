"""Instrument servers that expose the simulator over real wire protocols (LabVIEW, Nanonis)."""
