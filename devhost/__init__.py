"""Dev-only: run function_app.py locally against Azurite and the GeoCatalog emulator, without Core Tools.

Never deployed (.funcignore); production runs on Azure Functions.
"""
