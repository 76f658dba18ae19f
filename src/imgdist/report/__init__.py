"""The HTML report: metrics, provenance, a distance plot and thumbnails of telling images.

``write_report(path, result, real_features, fake_features, real_source, fake_source)``; the
nearest-neighbour helpers it uses are in :mod:`imgdist.report.neighbours`.
"""

from .html import write_report
from .neighbours import CrossNeighbours, WithinSet, cross_neighbours, nearest, within_set

__all__ = ["CrossNeighbours", "WithinSet", "cross_neighbours", "nearest", "within_set", "write_report"]
