"""Everything Qt (and editor.handover, the Qt-free hand-over the job runner builds on). Reaches the engines only through engines.api, engines.registry and engines.services."""
