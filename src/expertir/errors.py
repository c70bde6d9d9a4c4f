"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class ExpertirError(Exception):
    """A problem the user can fix (bad file, bad option, missing data)."""


class ImageReadError(ExpertirError):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CheckpointError(ExpertirError):
    pass
