"""Options: their one set of defaults (``schema``), config files and recipes (no torch here)."""
