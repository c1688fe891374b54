"""A local emulator of the Microsoft Planetary Computer Pro GeoCatalog REST API (dev-only, never deployed).

Start it with `python -m emulator --port 8080`, or in-process with `EmulatorServer`.
"""

from emulator.catalog import Catalog, Timings
from emulator.faults import Faults
from emulator.server import EmulatorOptions, EmulatorServer

__all__ = ["Catalog", "EmulatorOptions", "EmulatorServer", "Faults", "Timings"]
