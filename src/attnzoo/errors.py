"""The one exception type for mistakes a user can make.

Anything raised as `UserError` ends the `attnzoo` command with its message on one line and exit
status 2, never a traceback. Library callers get an ordinary exception (a `ValueError`).
"""


class UserError(ValueError):
    """A bad name, value, file or shape supplied by the user; the message says what is valid."""


def choices_hint(name: str, valid) -> str:
    """'valid: a, b, c' plus the closest matches to `name`, for error messages."""
    import difflib

    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(valid) if len(valid) <= 40 else ", ".join(valid[:40]) + f", ... ({len(valid)} in all)"
    return f"{hint}valid: {shown}"
