"""imgdist: compare images by pixel distance and by feature distance."""

__version__ = "0.1.0"
