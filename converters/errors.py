"""The one exception type a conversion raises for input it refuses."""


def first_line(error: BaseException) -> str:
    """An error's one-line cause: its first line that is not a header (``Error(s) in loading state_dict
    for X:`` is followed by the line naming the key); its type name when it says nothing."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if not line.endswith(":")), lines[-1] if lines else type(error).__name__)


class ConversionError(Exception):
    """A refusal with a one-line cause that names the key, shape or file at fault.

    Commands print ``str(error)`` as their last line and exit non-zero; no traceback is shown for it.
    """

    def __init__(self, message: str) -> None:
        # One line: a cause that spans lines would be cut by CI log views and by our own report.
        super().__init__(" ".join(message.split()))
