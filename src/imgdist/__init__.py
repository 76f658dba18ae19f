"""imgdist: compare images by pixel distance and by feature distance.

Public names are imported lazily, so that ``import imgdist`` (and ``imgdist --help``) stay quick.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "compare": "pairs", "compare_many": "pairs", "Comparison": "pairs",
    "pixel_distances": "pixel", "compare_pixels": "pixel", "PixelDistances": "pixel",
    "evaluate": "evaluation", "evaluate_features": "evaluation", "compute_stats": "evaluation",
    "Evaluator": "evaluation", "Result": "evaluation",
    "FeatureExtractor": "features", "extract_features": "features", "Features": "features",
    "GaussianStats": "stats", "Provenance": "provenance",
    "robustness": "perturbations", "RobustnessResult": "perturbations",
    "open_source": "sources",
    "load_backbone": "backbones", "list_specs": "backbones", "get_spec": "backbones",
    "custom_backbone": "backbones.custom",
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
