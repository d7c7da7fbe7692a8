"""Errors the engine raises. Every message says what is wrong and what the user can do about it."""


class UrbanFunctionsError(Exception):
    """Base class: a problem the user can act on (shown as-is in QGIS and on the command line)."""


class InputError(UrbanFunctionsError):
    """An input raster is unusable (missing, unreadable, wrong bands, no overlap...)."""


class ModelError(UrbanFunctionsError):
    """A model file or its card is missing, invalid or incompatible with the inputs."""


class OutputError(UrbanFunctionsError):
    """The output cannot be written (exists and overwrite is off, folder missing, not writable)."""


class MissingDependencyError(UrbanFunctionsError):
    """A Python package the engine needs (e.g. onnxruntime) cannot be imported."""


class Cancelled(UrbanFunctionsError):
    """The user cancelled the run; nothing was written."""
