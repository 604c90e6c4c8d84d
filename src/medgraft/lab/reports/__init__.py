"""Every results table and figure in README.md and docs/, regenerated from the committed
per-case and timing CSVs, and nothing else: one module per page or family of blocks, their prose
in Jinja2 ``templates/`` filled with the figures the modules compute; :mod:`.blocks` puts them
together (the code of ``scripts/report.py``, whose docstring lists the sources and what is
generated)."""
