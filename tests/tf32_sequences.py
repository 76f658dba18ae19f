"""A caller's TF32 / matmul-precision settings around imgdist extractions (issue 23), run in a fresh
interpreter (``python tests/tf32_sequences.py``) because torch's flags are process-wide: prints one
JSON object per sequence.

Each sequence is a list of steps: a caller's action from either API family (the legacy
``allow_tf32`` flags and ``set_float32_matmul_precision``, and, where torch has them, the
``fp32_precision`` attributes) or ``X`` / ``T``, an imgdist extraction in fp32 / tf32. It runs twice
from the same starting state, with and without the extractions, and records after every step
everything a caller can observe: each ``fp32_precision`` (as torch resolves it) and each legacy
getter (its value, or that it raises). The extractions must never raise, the network must see
strict float32 (or TF32 for ``T``) inside them, and the caller's observations must be the same with
and without them, also after a later global setting that reveals what inherits from what.
"""

from __future__ import annotations

import itertools
import json
import sys
import warnings

import numpy as np
import torch
from torch import nn

NEW = hasattr(torch.backends.cuda.matmul, "fp32_precision")
LEAVES = [("generic", "all")] + [(b, op) for b in ("cuda", "mkldnn") for op in ("all", "matmul", "conv", "rnn")]


def _set_new(backend, op, value):
    return lambda: torch._C._set_fp32_precision_setter(backend, op, value)


def _legacy_matmul(flag):
    def act():
        torch.backends.cuda.matmul.allow_tf32 = flag
    return act


def _legacy_cudnn(flag):
    def act():
        torch.backends.cudnn.allow_tf32 = flag
    return act


ACTIONS = {
    "legacy matmul.allow_tf32=True": _legacy_matmul(True),
    "legacy matmul.allow_tf32=False": _legacy_matmul(False),
    "legacy cudnn.allow_tf32=False": _legacy_cudnn(False),
    "legacy set_float32_matmul_precision('high')": lambda: torch.set_float32_matmul_precision("high"),
    "legacy set_float32_matmul_precision('medium')": lambda: torch.set_float32_matmul_precision("medium"),
}
if NEW:
    ACTIONS.update({
        "new cuda.matmul.fp32_precision='tf32'": _set_new("cuda", "matmul", "tf32"),
        "new cuda.matmul.fp32_precision='ieee'": _set_new("cuda", "matmul", "ieee"),
        "new cudnn.conv.fp32_precision='tf32'": _set_new("cuda", "conv", "tf32"),
        "new cudnn.fp32_precision='ieee'": _set_new("cuda", "all", "ieee"),
        "new backends.fp32_precision='tf32'": _set_new("generic", "all", "tf32"),
        "new mkldnn.matmul.fp32_precision='bf16'": _set_new("mkldnn", "matmul", "bf16"),
    })
#: later settings that show whether a level still inherits (a leaf left explicit would not follow)
REVEAL = ({"new backends.fp32_precision='bf16'": _set_new("generic", "all", "bf16"),
           "new cudnn.fp32_precision='tf32'": _set_new("cuda", "all", "tf32")} if NEW else
          {"legacy set_float32_matmul_precision('medium')": ACTIONS["legacy set_float32_matmul_precision('medium')"]})


def _read(getter):
    try:
        return getter()
    except Exception as exc:  # noqa: BLE001 - what the caller would see
        return f"raises {type(exc).__name__}"


def observe() -> dict:
    seen = {"legacy cudnn.allow_tf32": _read(lambda: torch.backends.cudnn.allow_tf32),
            "legacy matmul.allow_tf32": _read(lambda: torch.backends.cuda.matmul.allow_tf32),
            "legacy get_float32_matmul_precision": _read(torch.get_float32_matmul_precision)}
    if NEW:
        seen.update({f"{b}.{op}": torch._C._get_fp32_precision_getter(b, op) for b, op in LEAVES})
    return seen


def inside() -> tuple:
    """What the kernels read during an extraction: whether cuBLAS and cuDNN may use TF32, and
    whether oneDNN's matmul and convolution are strict ('none' resolves to strict float32)."""
    if NEW:
        get = torch._C._get_fp32_precision_getter
        return (get("cuda", "matmul") == "tf32", get("cuda", "conv") == "tf32",
                get("mkldnn", "matmul") in ("none", "ieee"), get("mkldnn", "conv") in ("none", "ieee"))
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision() == "highest")


#: what the network must see: strict float32 everywhere (X), or TF32 on the GPU (T: oneDNN is not
#: asked, tf32 is refused on a CPU)
EXPECTED = {"X": (False, False, True, True) if NEW else (False, False, True),
            "T": (True, True) if NEW else (True, True)}


def reset() -> None:
    """torch's starting state, whatever came before (the same for both runs of a sequence)."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    if NEW:
        for b, op in LEAVES:
            torch._C._set_fp32_precision_setter(b, op, "tf32" if (b, op) in (("cuda", "conv"), ("cuda", "rnn"))
                                                else "none")


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.seen = []

    def forward(self, x):
        self.seen.append(inside())
        return self.conv(x)


def extractors():
    import imgdist.extraction.features as F
    from imgdist.extraction.backbones.custom import custom_backbone

    F.check_cpu_precision = lambda precision: None  # tf32 is refused on a CPU; its flags are not
    net = Recorder()
    backbone = custom_backbone(net, input_size=8)
    make = lambda precision: F.FeatureExtractor(backbone, device="cpu", progress=False, workers=0,  # noqa: E731
                                                batch_size=4, precision=precision)
    return net, {"X": make("fp32"), "T": make("tf32")}


def run(steps, net, ex, with_imgdist: bool) -> dict:
    reset()
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    trace = []
    for step in steps:
        if step in ex:
            if not with_imgdist:
                continue
            net.seen.clear()
            try:
                ex[step].extract(images, keep_features=False)
            except Exception as exc:  # noqa: BLE001 - the failure this checks for
                return {"raised": f"{step}: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}",
                        "trace": trace}
            want = EXPECTED[step]
            if {seen[:len(want)] for seen in net.seen} != {want}:
                return {"raised": None, "inside": f"{step} saw {sorted(set(map(str, net.seen)))}", "trace": trace}
        else:
            (ACTIONS.get(step) or REVEAL[step])()
            trace.append((step, observe()))
    return {"raised": None, "inside": None, "trace": trace}


def sequences():
    names = list(ACTIONS)
    for a in names:
        yield ["X", a, "X", *REVEAL]            # the order: an extraction, the caller's flag, another
        yield [a, "T", "X", *REVEAL]
    for a, b in itertools.product(names, repeat=2):
        yield [a, "X", b, "X", *REVEAL]


def main() -> None:
    warnings.simplefilter("ignore")  # torch's deprecation notices for the legacy API
    net, ex = extractors()
    for steps in sequences():
        alone = run(steps, net, ex, with_imgdist=False)
        with_ = run(steps, net, ex, with_imgdist=True)
        print(json.dumps({"steps": steps, "raised": with_["raised"], "inside": with_.get("inside"),
                          "same_for_the_caller": with_["trace"] == alone["trace"]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
