"""Regenerate the text-to-image fixtures with the reference code itself.

Run in the peers environment (clip-anytorch, open-clip-torch 3.3.0; see DESIGN.md):

    /tmp/peers-venv/bin/python tools/peers/make_text_fixtures.py [tokens] [clip] [openclip]

(no argument: all three). It writes

* ``tests/fixtures/text_tokens.npz`` (``tokens``): 1,200 prompts made here from a fixed seed
  (hand-picked edge cases, then generated captions: long prompts, accented and non-Latin scripts,
  combining marks, full-width forms, mojibake, HTML entities single and double escaped, emoji with
  modifiers and joiners, tabs, newlines, no-break and ideographic spaces, control characters,
  mixed case, numbers, punctuation, contractions, the special-token strings themselves) and their
  ids from clip-anytorch's ``clip.tokenize(prompts, truncate=True)`` (OpenAI's tokenizer) and from
  open_clip's ``get_tokenizer("ViT-B-32")`` (OpenCLIP's), as uint16 N x 77, plus each prompt's
  untruncated token count ``len(_tokenizer.encode(p)) + 2``.
* ``tests/fixtures/text_clip_peers.npz`` (``clip``): OpenAI CLIP (clip-anytorch's ``CLIP`` model
  code with its ``convert_weights``, float16 like OpenAI's files) for ViT-B/32 and ViT-L/14 with
  deterministic stand-in weights of *both* towers (``tests/vit_stand_in.stand_in_state_dict``,
  ``clip_b32_full`` / ``clip_l14_full``), saved as a traced TorchScript archive and loaded with
  ``clip.load(file, jit=False)`` on the CPU, exactly as OpenAI's own files are; for imgdist's
  shipped photos (``tests/text_stand_in.builtin_photos``: all three for B/32, the first two for
  L/14) and the prompts ``CLIP_SCORE_PROMPTS`` (image i pairs with prompt i): the image
  embeddings (``encode_image`` of ``clip.load``'s own ``preprocess``), the text embeddings
  (``encode_text(clip.tokenize(prompts, truncate=True))``), the per-image CLIP score
  ``100 * max(cos, 0)`` computed from them in float64 here for every image-prompt pair, the
  per-image scores of the matching pairs and their mean. The text embeddings of a few long and odd
  prompts (``TEXT_ONLY_PROMPTS``) too.
* ``tests/fixtures/openclip_keys.json`` and ``tests/fixtures/openclip_peers.npz`` (``openclip``):
  the names, shapes and dtypes of every tensor of open_clip's ``ViT-B-32``, ``ViT-H-14`` and
  ``ViT-bigG-14`` (``create_model(name)`` on the meta device, i.e. what their published weight
  files hold), their text and vision configurations, and, for two small configurations
  (``OPENCLIP_SMALL``: one with a non-4 MLP ratio and head width like bigG's) with stand-in
  weights, open_clip's own ``encode_image`` / ``encode_text`` outputs on fixed inputs and on the
  photos through open_clip's own preprocessing (``create_model_and_transforms``).

No imgdist code is used: the fixtures are an independent reference for ``tests/test_tokenizer.py``,
``tests/test_clip_text.py`` and ``tests/test_openclip.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "tests"))

import vit_stand_in as S  # noqa: E402

warnings.filterwarnings("ignore")

N_PROMPTS = 1200

# --- prompts ----------------------------------------------------------------------------------

EDGE_CASES = [
    "", " ", "\t\n", "a", "A", "a photo of a cat", "A PHOTO OF A CAT", "a photo of a cat.",
    "  leading and trailing spaces  ", "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeeds",
    "no\u00a0break\u2003em\u3000ideographic\u2009thin\u202fnarrow\u205fmath spaces",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom", "next\u0085line", "file\x1cgroup\x1drecord\x1eunit\x1fsep",
    "bell\x07 escape \x1b[31mred\x1b[0m terminal", "null\x00char", "soft\u00adhyphen",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 co\u00f6perate", "cafe\u0301 with a combining accent",
    "Stra\u00dfe in M\u00fcnchen", "\u0130stanbul and \u0131\u0130", "\u1e9e capital sharp s",
    "\uff21\uff22\uff23 full-width \uff11\uff12\uff13", "\ufb01sh and \ufb02ower ligatures", "\u2160\u2161\u2162 roman numerals",
    "caf\u00c3\u00a9 mojibake \u00e2\u20ac\u0153quoted\u00e2\u20ac\u009d", "\u201ccurly quotes\u201d and \u2018single\u2019",
    "em\u2014dash en\u2013dash \u2026 ellipsis", "Tom &amp; Jerry", "5 &lt; 6 &gt; 4", "&quot;quoted&quot; &#39;single&#39;",
    "&eacute;l&egrave;ve &ntilde; &copy; &reg; &trade;", "&#x27;hex&#x27; &#8364; euro", "double &amp;amp; escaped &amp;lt;b&amp;gt;",
    "&nbsp;nbsp entity&nbsp;", "unknown &notanentity; entity", "a dog \U0001f436 and a cat \U0001f431",
    "thumbs \U0001f44d\U0001f3fd up", "family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "flags \U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5", "keycap 1\ufe0f\u20e3 heart \u2764\ufe0f", "\U0001f600" * 40,
    "\u4e00\u53ea\u732b\u5750\u5728\u6905\u5b50\u4e0a", "\u732b\u304c\u6905\u5b50\u306b\u5ea7\u3063\u3066\u3044\u308b",
    "\uace0\uc591\uc774\uac00 \uc758\uc790\uc5d0 \uc549\uc544 \uc788\ub2e4", "\u041a\u043e\u0448\u043a\u0430 \u0441\u0438\u0434\u0438\u0442 \u043d\u0430 \u0441\u0442\u0443\u043b\u0435",
    "\u0397 \u03b3\u03ac\u03c4\u03b1 \u03ba\u03ac\u03b8\u03b5\u03c4\u03b1\u03b9", "\u0627\u0644\u0642\u0637\u0629 \u062a\u062c\u0644\u0633 \u0639\u0644\u0649 \u0627\u0644\u0643\u0631\u0633\u064a",
    "\u05d4\u05d7\u05ea\u05d5\u05dc \u05d9\u05d5\u05e9\u05d1\u05ea", "\u092c\u093f\u0932\u094d\u0932\u0940 \u0915\u0941\u0930\u094d\u0938\u0940 \u092a\u0930",
    "\u0e41\u0e21\u0e27\u0e19\u0e31\u0e48\u0e07\u0e1a\u0e19\u0e40\u0e01\u0e49\u0e32\u0e2d\u0e35\u0e49", "\u0661\u0662\u0663 arabic digits \u0967\u0968 devanagari",
    "it's they're we've I'm you'll he'd can't", "IT'S THEY'RE WE'VE I'M YOU'LL HE'D", "it\u2019s curly apostrophe",
    "3.14159 1,000,000 2nd 3rd 4th 10% $5 \u20ac20 1/2 \u00bd", "1234567890" * 10, "....!!!???", "a--b__c~~d",
    "(parens) [brackets] {braces} <angles>", "@user #hashtag $money %percent ^caret &and *star",
    "email me at someone@example.com or visit https://example.com/a?b=c&d=e", "C:\\path\\to\\file.png",
    "<|startoftext|> literal start", "literal end <|endoftext|> inside", "<|ENDOFTEXT|> upper case",
    "<start_of_text> openclip literal <end_of_text>", "<|endoftext|><|endoftext|><|endoftext|>",
    "a " * 100, "word " * 76, "word " * 75, "word " * 74, "supercalifragilisticexpialidocious " * 10,
    "pneumonoultramicroscopicsilicovolcanoconiosis", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "x" * 300, "\u00e9" * 100, "\u4e00" * 100, "mIxEd CaSe PrOmPt WiTh NuMbErS 42", "snake_case and camelCase and kebab-case",
]

SUBJECTS = ["a cat", "two dogs", "an astronaut", "a red sports car", "the Eiffel Tower", "a bowl of ramen",
            "a cup of coffee", "an old man", "a golden retriever", "a castle", "a robot", "three apples",
            "a lighthouse", "a corgi", "a teddy bear", "a violin", "a sailboat", "a fox", "a bicycle",
            "a croissant", "Mount Fuji", "a koala", "a skyscraper", "a hummingbird", "a steam locomotive"]
ACTIONS = ["sitting on", "riding", "next to", "flying over", "eating", "reading a book about", "painting",
           "standing in front of", "jumping over", "hiding behind", "holding", "looking at"]
PLACES = ["a wooden table", "the moon", "a busy street in Tokyo", "a snowy forest", "the beach at sunset",
          "a neon-lit alley", "a library", "Times Square", "a field of sunflowers", "an underwater reef"]
STYLES = ["oil painting", "watercolor", "8k photograph", "studio lighting", "trending on artstation",
          "by Greg Rutkowski", "in the style of Van Gogh", "cinematic, 35mm", "ultra-detailed", "low poly",
          "pixel art", "isometric 3D render", "hyperrealistic", "bokeh", "HDR", "Unreal Engine 5"]
SPICE = ["caf\u00e9", "na\u00efve", "\u00fcber", "\u00c5ngstr\u00f6m", "\u0141\u00f3d\u017a", "\u00e7a va", "\u732b", "\u30ab\u30e1\u30e9",
         "\ud55c\uad6d", "\u041c\u043e\u0441\u043a\u0432\u0430", "\u03b1\u03b2\u03b3", "\U0001f680", "\U0001f525",
         "\u2728", "\U0001f308", "\U0001f44d\U0001f3fb", "&amp;", "&quot;", "&#233;", "&lt;3", "&amp;amp;",
         "\u00a0", "\t", "\n", "\u3000", "\u200b", "\u2019s", "'s", "'LL", "42", "3.5", "1st", "100%",
         "!!!", "?!", "...", "\u2014", "(sic)", "[1]", "#1", "@2x", "x2", "\u00b2", "\u2153", "\uff01", "\ufb01"]


def make_prompts(seed: int = 22) -> list[str]:
    rng = np.random.default_rng(seed)
    prompts = list(EDGE_CASES)
    while len(prompts) < N_PROMPTS:
        kind = rng.integers(0, 5)
        caption = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}"
        if kind == 0:  # a plain caption, in random case
            case = rng.integers(0, 4)
            caption = [caption, caption.upper(), caption.title(), caption.capitalize()][case]
        elif kind == 1:  # a long prompt with a chain of styles (often past 77 tokens)
            styles = rng.choice(STYLES, size=int(rng.integers(4, 30)))
            caption = caption + ", " + ", ".join(styles)
        elif kind == 2:  # spiced with unicode, entities, emoji, odd whitespace and numbers
            words = caption.split(" ")
            for _ in range(int(rng.integers(1, 6))):
                words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(SPICE)))
            joiners = [" ", "  ", "\t", " \u00a0", "\n"]
            caption = "".join(w + str(rng.choice(joiners, p=[0.8, 0.05, 0.05, 0.05, 0.05])) for w in words)
        elif kind == 3:  # punctuation and numbers around the words
            count = int(rng.integers(1, 9999))
            caption = f"{count} x {caption}!!! ({rng.choice(STYLES)}) -- {rng.integers(1, 100)}% \"{rng.choice(SUBJECTS)}\""
        else:  # two sentences with mixed case and a repeated word run
            repeat = " ".join([str(rng.choice(SUBJECTS)).split(" ")[-1]] * int(rng.integers(1, 60)))
            caption = f"{caption.upper()}. {repeat}. {rng.choice(STYLES).title()}"
        prompts.append(caption)
    return prompts


def run_tokens() -> None:
    import clip
    from clip.clip import _tokenizer
    import open_clip

    prompts = make_prompts()
    openai_ids = clip.tokenize(prompts, truncate=True).numpy()
    openclip_ids = open_clip.get_tokenizer("ViT-B-32")(prompts).numpy()
    lengths = np.array([len(_tokenizer.encode(p)) + 2 for p in prompts])
    assert openai_ids.max() < 2 ** 16
    np.savez_compressed(FIXTURES / "text_tokens.npz", prompts=np.array(prompts), openai=openai_ids.astype(np.uint16),
                        openclip=openclip_ids.astype(np.uint16), lengths=lengths,
                        versions=np.array(json.dumps({p: version(p) for p in ("clip-anytorch", "open_clip_torch", "ftfy",
                                                                                  "regex")})))
    print(f"tokens: {len(prompts)} prompts, {(lengths > 77).sum()} longer than 77 tokens, "
          f"{(openai_ids != openclip_ids).any(axis=1).sum()} where OpenAI's and OpenCLIP's ids differ")


# --- OpenAI CLIP: both towers, CLIP score ----------------------------------------------------

CLIP_ARCHS = {"clip_b32_full": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
              "clip_l14_full": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12)}
# embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
# vocab_size, transformer_width, transformer_heads, transformer_layers: OpenAI's ViT-B/32 and ViT-L/14
CLIP_IMAGES = {"clip_b32_full": 3, "clip_l14_full": 2}  # photos per model (ViT-L/14 is slow on a CPU)


def clip_reference(arch: str, device=None):
    from clip.model import CLIP, convert_weights

    with torch.device(device or "cpu"):
        model = CLIP(*CLIP_ARCHS[arch])
    convert_weights(model)
    return model


def openclip_reference(name: str, device=None):
    from open_clip.model import CLIP

    cfg = OPENCLIP_SMALL[name] if name in OPENCLIP_SMALL else __import__("open_clip").get_model_config(OPENCLIP_REAL[name])
    with torch.device(device or "cpu"):
        return CLIP(**cfg)


OPENCLIP_REAL = {"openclip_b32": "ViT-B-32", "openclip_h14": "ViT-H-14", "openclip_bigg14": "ViT-bigG-14"}
OPENCLIP_PRETRAINED = {"ViT-B-32": "laion2b_s34b_b79k", "ViT-H-14": "laion2b_s32b_b79k",
                       "ViT-bigG-14": "laion2b_s39b_b160k"}
# two small configurations with the real ones' quirks: patch 32 like B-32; head width 52 and FFN
# ratio 4.9231 (int(208 * 4.9231) = 1024) and a text head count that is not width / 64, like bigG
OPENCLIP_SMALL = {
    "openclip_small_a": dict(embed_dim=32, vision_cfg=dict(image_size=224, layers=2, width=64, head_width=16,
                                                           patch_size=32),
                             text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=2)),
    "openclip_small_b": dict(embed_dim=48, vision_cfg=dict(image_size=224, layers=2, width=208, head_width=52,
                                                           mlp_ratio=4.9231, patch_size=14),
                             text_cfg=dict(context_length=77, vocab_size=49408, width=80, heads=5, layers=2)),
}


def write_text_keys() -> None:
    import open_clip

    archs = {}
    for arch in CLIP_ARCHS:
        state = clip_reference(arch, "meta").state_dict()
        archs[arch] = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]
    configs = {}
    for name in (*OPENCLIP_REAL, *OPENCLIP_SMALL):
        state = openclip_reference(name, "meta").state_dict()
        archs[name] = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]
        configs[name] = OPENCLIP_SMALL.get(name) or open_clip.get_model_config(OPENCLIP_REAL[name])
    preprocess = {model: open_clip.get_pretrained_cfg(model, tag) for model, tag in OPENCLIP_PRETRAINED.items()}
    source = (f"clip-anytorch {version('clip-anytorch')} (CLIP + convert_weights), open_clip_torch "
              f"{version('open_clip_torch')} (open_clip.model.CLIP(**config).state_dict())")
    lines = ",\n".join(f'"{a}": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]" for a, rows in archs.items())
    (FIXTURES / "text_keys.json").write_text(
        '{"source": ' + json.dumps(source) + ',\n"openclip_configs": ' + json.dumps(configs)
        + ',\n"openclip_pretrained": ' + json.dumps(preprocess) + ',\n"archs": {\n' + lines + "\n}}\n")


def traced_clip_file(arch: str, path: Path) -> Path:
    """The stand-in as a TorchScript archive like OpenAI's (traced CLIP, float16 weights)."""
    import text_stand_in as TS

    model = clip_reference(arch).eval()
    model.load_state_dict(TS.stand_in_state_dict(arch), strict=True)
    size = CLIP_ARCHS[arch][1]
    traced = torch.jit.trace(model, (torch.zeros(1, 3, size, size, dtype=torch.float16),
                                     torch.zeros(1, 77, dtype=torch.long)), check_trace=False)
    traced.save(str(path))
    return path


def run_clip() -> None:
    import clip
    from PIL import Image

    import text_stand_in as TS

    write_text_keys()
    images = TS.builtin_photos()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in CLIP_ARCHS:
            path = traced_clip_file(arch, Path(tmp) / f"{arch}.pt")
            model, preprocess = clip.load(str(path), device="cpu", jit=False)
            model.eval()
            with torch.no_grad():
                image = np.concatenate([model.encode_image(preprocess(Image.fromarray(im))[None]).float().numpy()
                                        for im in images[:CLIP_IMAGES[arch]]])
                text = model.encode_text(clip.tokenize(list(TS.CLIP_SCORE_PROMPTS), truncate=True)).float().numpy()
                extra = model.encode_text(clip.tokenize(list(TS.TEXT_ONLY_PROMPTS), truncate=True)).float().numpy()
            scores = TS.clip_scores(image, text)
            out.update({f"{arch}_image": image, f"{arch}_text": text, f"{arch}_text_extra": extra,
                        f"{arch}_scores": scores, f"{arch}_per_image": np.diag(scores).copy(),
                        f"{arch}_mean": np.float64(np.diag(scores).mean()),
                        f"{arch}_weights": np.array(S.weights_digest(TS.stand_in_state_dict(arch)))})
            print(f"{arch}: per-image CLIP score {np.round(np.diag(scores), 3)}, all pairs {np.round(scores, 2).tolist()}")
    out["images_sha256"] = np.array(S.images_digest(images))
    out["versions"] = np.array(json.dumps({p: version(p) for p in ("clip-anytorch", "torch", "pillow", "torchvision")}))
    np.savez_compressed(FIXTURES / "text_clip_peers.npz", **out)


# --- OpenCLIP ---------------------------------------------------------------------------------

def run_openclip() -> None:
    import open_clip
    from PIL import Image

    import text_stand_in as TS

    write_text_keys()
    images = TS.builtin_photos()
    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", device="cpu")  # pretrained=None: its
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # eval transform is the LAION tags' (same cfg, see keys file)
    prompts = list(TS.CLIP_SCORE_PROMPTS + TS.TEXT_ONLY_PROMPTS) + ["<end_of_text> literal", "<start_of_text>"]
    out = {"prompts": np.array(prompts), "images_sha256": np.array(S.images_digest(images))}
    for name in OPENCLIP_SMALL:
        model = openclip_reference(name).eval()
        model.load_state_dict(TS.stand_in_state_dict(name), strict=True)
        with torch.no_grad():
            out[f"{name}_raw"] = model.encode_image(S.raw_inputs(224, 2)).numpy()
            out[f"{name}_image"] = np.concatenate([model.encode_image(preprocess(Image.fromarray(im))[None]).numpy()
                                                   for im in images])
            out[f"{name}_text"] = model.encode_text(tokenizer(prompts)).numpy()
        out[f"{name}_weights"] = np.array(S.weights_digest(TS.stand_in_state_dict(name)))
        print(f"{name}: image {out[f'{name}_image'].shape}, text {out[f'{name}_text'].shape}")
    out["versions"] = np.array(json.dumps({p: version(p) for p in ("open_clip_torch", "torch", "pillow", "torchvision")}))
    np.savez_compressed(FIXTURES / "openclip_peers.npz", **out)


def main() -> None:
    wanted = set(sys.argv[1:]) or {"tokens", "clip", "openclip"}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if "tokens" in wanted:
        run_tokens()
    if "clip" in wanted:
        run_clip()
    if "openclip" in wanted:
        run_openclip()


if __name__ == "__main__":
    main()
