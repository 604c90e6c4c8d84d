"""``--help`` with each command's options in sections (data, model and weights, optimisation…).

Written here rather than taken from a library: typer's own ``rich_help_panel`` groups options
but renders them with rich, whose panels cut long names (``--freeze-encoder-epochs`` becomes
``--freeze-encoder…`` at 80 columns), and click-option-group targets click itself, not the
click typer 0.29 vendors. So each option names its section in typer's ``rich_help_panel`` (the
schema's ``section``, or the one a hand-written parameter gives) and click's plain formatter
writes one section per group: every name in full, wrapped to the terminal as before.
"""

from __future__ import annotations

from typer import _click
from typer.core import TyperCommand

from medgraft.config.schema import HELP_SECTIONS

HELP_OPTION_SECTION = "Help"
"""The last section, for ``--help`` alone."""

NAME_COLUMN_MAX = 30
"""click's widest name column: a longer name gets a line of its own, its help below."""

Rows = list[tuple[str, str]]


class SectionedCommand(TyperCommand):
    """A typer command whose ``--help`` lists its options by section, in ``HELP_SECTIONS``'
    order, with ``--help`` last, and every section's help text in one column."""

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        groups = [(title, rows) for title, rows in self.help_groups(ctx) if rows]
        # write_dl sizes its name column by its own rows: padding each section's first name
        # to the widest of all lines the sections' help texts up in one column
        column = min(max(len(name) for _, rows in groups for name, _ in rows), NAME_COLUMN_MAX)
        for title, rows in groups:
            with formatter.section(title):
                formatter.write_dl([(rows[0][0].ljust(column), rows[0][1]), *rows[1:]])

    def help_groups(self, ctx: _click.Context) -> list[tuple[str, Rows]]:
        """(title, help rows) of the arguments, each section and ``--help``, in that order.

        An option naming no known section fails loudly: a bug the CLI tests catch."""
        help_option = self.get_help_option(ctx)
        arguments: Rows = []
        sections: dict[str, Rows] = {name: [] for name in HELP_SECTIONS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or param is help_option:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
                continue
            section = getattr(param, "rich_help_panel", None)
            if section not in sections:
                raise ValueError(f"{self.name}: {param.opts[0]} names no help section: {section}")
            sections[section].append(record)
        groups = [("Arguments", arguments)]
        groups += [(name.capitalize(), rows) for name, rows in sections.items()]
        if help_option is not None:
            groups.append((HELP_OPTION_SECTION, [help_option.get_help_record(ctx)]))
        return groups
