"""deepspm-bluesky: autonomous scanning tunneling microscopy as a Bluesky/Ophyd plugin."""

__version__ = "0.1.0"
