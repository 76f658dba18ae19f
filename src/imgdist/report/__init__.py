"""The HTML report: metrics, provenance, a distance plot and thumbnails of telling images.

``write_report(path, result, real_features, fake_features, real_source, fake_source)``; the
nearest-neighbour helpers it uses are in :mod:`imgdist.report.neighbours`.
"""

from .html import write_report
from .neighbours import CrossNeighbours, cross_neighbours

__all__ = ["CrossNeighbours", "cross_neighbours", "write_report"]
