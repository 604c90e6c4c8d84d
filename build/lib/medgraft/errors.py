"""The one exception type for problems a user can cause and fix."""


class MedgraftError(Exception):
    """A user-fixable problem (bad path, corrupt file, wrong labels).

    The CLI prints its message as one line, without a traceback, and exits non-zero.
    """


def root_cause(exc: BaseException) -> BaseException:
    """The innermost chained exception (MONAI wraps reader errors in its own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line user errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
