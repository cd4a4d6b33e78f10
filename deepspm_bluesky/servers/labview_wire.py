"""Wire format of the DeepSPM LabVIEW instrument server, shared by our client and server.

A request is one bare ASCII call, ``name(arg,arg,...)``, with no terminator and no length
prefix; lengths are metres written with an SI suffix (``12.5n``), small volts and seconds
with ``m`` (``20m``, ``200m``). A scan is answered with 8 bytes ``>ii`` (rows, cols) and
rows * cols big-endian float32 heights in metres; every other request with short ASCII text.

Requests of the original protocol: ``scan``, ``tipshaping``, ``tipclean``, ``getparam``,
``approach``, ``movearea``. Extensions our server understands (the original LabVIEW server
does not): ``withdraw()`` and ``setparam(Bias,<V>)`` / ``setparam(Setpoint,<A>)``.

References
----------
Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3
"""

from __future__ import annotations

import re
import struct

DEFAULT_PORT = 50008
SHAPE_HEADER = struct.Struct(">ii")
PIXEL_DTYPE = ">f4"
MAX_PIXELS = 8192
MAX_REQUEST_BYTES = 512
ORIGINAL_REQUESTS = ("scan", "tipshaping", "tipclean", "getparam", "approach", "movearea")
EXTENSION_REQUESTS = ("withdraw", "setparam")

_SUFFIX = {"": 1.0, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([pnumk]?)\s*$")
_REQUEST = re.compile(r"^\s*([A-Za-z]+)\s*\((.*)\)\s*$", re.DOTALL)
MOVEAREA_REPLY = re.compile(r"Approach area changed with\s+(\d+)\s+crash")


def format_nano(value: float) -> str:
    """A length in metres as nanometres with the ``n`` suffix (``0`` for zero)."""
    return "0" if value == 0 else f"{value * 1e9:.12g}n"


def format_milli(value: float) -> str:
    """Volts or seconds; values below 1 in milli-units with the ``m`` suffix."""
    if value == 0:
        return "0"
    return f"{value * 1e3:.12g}m" if abs(value) < 1 else f"{value:.12g}"


def parse_number(text: str) -> float:
    """A plain or SI-suffixed number (``-1.2n``, ``200m``, ``4``, ``8.5e-07``)."""
    match = _NUMBER.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a number (optionally with a p/n/u/m/k suffix)")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def parse_request(text: str) -> tuple[str, list[str]]:
    """``"scan(1n,2n,10n ,64)"`` -> ``("scan", ["1n", "2n", "10n", "64"])``."""
    match = _REQUEST.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a request of the form name(arg,...)")
    name, body = match.groups()
    args = [a.strip() for a in body.split(",")] if body.strip() else []
    return name, args


def scan_request(x_m: float, y_m: float, size_m: float, pixels: int) -> str:
    """The scan request as the reference client writes it."""
    return f"scan({format_nano(x_m)},{format_nano(y_m)},{format_nano(size_m)} ,{int(pixels)})"


def tipshaping_request(x_m: float, y_m: float, dip_m: float, bias_v: float,
                       duration_s: float) -> str:
    """Conditioning at (x, y): dip depth (m, <= 0), bias (V), duration (s)."""
    return (f"tipshaping({format_nano(x_m)},{format_nano(y_m)},{format_nano(dip_m)},"
            f"{format_milli(bias_v)},{format_milli(duration_s)})")
