"""The closed choices of the command line's own options, as str Enums so `--help` lists them.

A config field's choices are declared with the field (bncli/fields.py); bncli.flags makes them
such an Enum for its flag. Kept free of heavy imports: the CLI needs these before torch or pydantic.
"""

from enum import Enum


class Choice(str, Enum):
    """A closed choice that reads as its value wherever it is formatted (str(), f-strings,
    format()): `kaiming`, never `Init.kaiming`."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Format(Choice):
    table = "table"  # rich tables and summary lines, for people
    csv = "csv"  # exactly the result's CSV file
    json = "json"  # one document: study, status, settings, info and rows (non-finite numbers as null)


class Backend(Choice):
    local = "local"  # this machine: one process, or a spawn pool with --workers
    ray = "ray"  # one Ray task per run, on a local instance or a cluster
