"""The one exception type the CLI turns into a clear sentence and a non-zero exit."""


class PipelineError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""
