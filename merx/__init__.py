"""merx: an experiment orchestrator for bimodal (audio + lyrics) music emotion recognition.

The public plugin API is re-exported here so that plugins need only ``import merx``:
``merx.hookimpl`` marks hook implementations; the hook specifications live in
``merx.hookspecs``. Everything else is internal.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("merx")

__all__ = ["hookimpl", "__version__"]
