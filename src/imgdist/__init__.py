"""imgdist: compare images by pixel distance and by feature distance.

Public names are imported lazily, so that ``import imgdist`` (and ``imgdist --help``) stay quick.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "compare": "pairs.compare", "compare_many": "pairs.compare", "Comparison": "pairs.compare",
    "pixel_distances": "pairs.pixel", "compare_pixels": "pairs.pixel", "PixelDistances": "pairs.pixel",
    "evaluate": "evaluation.run", "evaluate_features": "evaluation.run", "compute_stats": "evaluation.run",
    "score": "evaluation.run",
    "Evaluator": "evaluation.run", "Result": "evaluation.run", "MetricOptions": "evaluation.options",
    "FeatureExtractor": "extraction.features", "extract_features": "extraction.features", "Features": "extraction.features",
    "GaussianStats": "extraction.stats", "Provenance": "extraction.provenance",
    "robustness": "pairs.perturbations", "RobustnessResult": "pairs.perturbations",
    "open_source": "extraction.sources",
    "load_backbone": "extraction.backbones", "list_specs": "extraction.backbones", "get_spec": "extraction.backbones",
    "custom_backbone": "extraction.backbones.custom",
    "load_lpips": "extraction.perceptual.lpips", "load_dists": "extraction.perceptual.dists",
    "lpips_diversity": "extraction.perceptual.diversity",
    "ImgdistError": "errors", "ImageError": "errors", "SourceError": "errors", "WeightsError": "errors",
    "ProvenanceError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'imgdist' has no attribute {name!r}")
