"""The project's own error types: each carries a message fit to show a person."""


class FacexprError(Exception):
    """Base class: the message is plain words a user can act on."""


class ImageError(FacexprError):
    """The bytes are not an image facexpr can read (or are too large, too small, broken)."""


class LabelError(FacexprError):
    """A label that is not one of the seven expressions."""


class ModelError(FacexprError):
    """No usable model file or model card."""


class DataError(FacexprError):
    """A dataset location that is missing, empty or not in the image layout."""
