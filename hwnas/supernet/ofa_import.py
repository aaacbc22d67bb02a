"""Import Once-for-All's published MobileNetV3 supernets (`ofa_mbv3_d234_e346_k357_w1.0` / `_w1.2`).

hwnas's `mbv3-imagenet` space is OFA's MobileNetV3 block for block, with the same elastic
semantics (leading-channel slices, kernel transform matrices applied as `F.linear` to the centre
crop of the next larger kernel, SE width `make_divisible(c // 4, 8)`, BN eps 1e-5), so the import
is a pure renaming of tensors by role: no arithmetic, hence exact. Every tensor is accounted for:
a missing, extra or wrongly shaped one is a UserError naming it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from hwnas.errors import UserError
from hwnas.space.models import Space
from hwnas.space.presets import load_space, with_classes

OFA_SPACES = ("mbv3-imagenet", "mbv3-imagenet-w1.2")
IMPORTED_DATA = "ImageNet (Once-for-All checkpoint)"
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_OPTIONAL_SUFFIX = ".num_batches_tracked"  # older torch / some exports drop it; it never changes a forward


def ofa_key_map(space: Space) -> dict[str, str]:
    """OFA state-dict key -> hwnas Supernet state-dict key, by role, for an OFA-layout space.

    Layout (OFA's `OFAMobileNetV3`): first_conv, blocks.0 (fixed depthwise-separable block), then
    blocks.1.. the elastic MBConvs stage after stage at their maximum depth, final_expand_layer,
    feature_mix_layer, classifier.
    """
    if space.first_block is None or space.head.feature_mix is None:
        raise UserError(f"space '{space.name}': OFA's MobileNetV3 layout needs a first_block and a head feature_mix")
    m: dict[str, str] = {"first_conv.conv.weight": "stem.0.weight"}
    m.update(_bn("first_conv.bn", "stem.1"))
    m["blocks.0.conv.depth_conv.conv.weight"] = "first_block.depthwise.0.weight"
    m.update(_bn("blocks.0.conv.depth_conv.bn", "first_block.depthwise.1"))
    m["blocks.0.conv.point_linear.conv.weight"] = "first_block.project.0.weight"
    m.update(_bn("blocks.0.conv.point_linear.bn", "first_block.project.1"))
    n = 1
    for i, st in enumerate(space.stages):
        ks = sorted(st.kernels)
        for j in range(st.max_depth):
            m.update(_elastic_block(f"blocks.{n}.conv", f"stages.{i}.{j}", ks, st.se))
            n += 1
    m["final_expand_layer.conv.weight"] = "head.final_expand.0.weight"
    m.update(_bn("final_expand_layer.bn", "head.final_expand.1"))
    m["feature_mix_layer.conv.weight"] = "head.feature_mix.0.weight"
    m["classifier.linear.weight"] = "head.classifier.weight"
    m["classifier.linear.bias"] = "head.classifier.bias"
    return m


def _bn(ofa: str, hw: str) -> dict[str, str]:
    return {f"{ofa}.{s}": f"{hw}.{s}" for s in _BN}


def _elastic_block(p: str, h: str, kernels: list[int], se: bool) -> dict[str, str]:
    """One OFA DynamicMBConvLayer: inverted_bottleneck / depth_conv (+ kernel matrices, SE) / point_linear."""
    m = {f"{p}.inverted_bottleneck.conv.conv.weight": f"{h}.expand_conv.weight"}
    m.update(_bn(f"{p}.inverted_bottleneck.bn.bn", f"{h}.expand_bn"))
    m[f"{p}.depth_conv.conv.conv.weight"] = f"{h}.depthwise.weight"
    for small, big in zip(kernels[:-1], kernels[1:]):
        # OFA's `{big}to{small}_matrix` and hwnas's `transforms[{big}to{small}]` are the same linear map
        # (F.linear on the flattened centre crop), so the matrix is copied as is, not transposed.
        m[f"{p}.depth_conv.conv.{big}to{small}_matrix"] = f"{h}.depthwise.transforms.{big}to{small}"
    m.update(_bn(f"{p}.depth_conv.bn.bn", f"{h}.depthwise_bn"))
    if se:
        for layer in ("reduce", "expand"):
            for t in ("weight", "bias"):
                m[f"{p}.depth_conv.se.fc.{layer}.{t}"] = f"{h}.se.{layer}.{t}"
    m[f"{p}.point_linear.conv.conv.weight"] = f"{h}.project.weight"
    m.update(_bn(f"{p}.point_linear.bn.bn", f"{h}.project_bn"))
    return m


def normalize_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept the key spellings OFA has used: `module.` (DataParallel) prefixes and the older
    `.mobile_inverted_conv.` (the published checkpoints) for today's `.conv.`."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        nk = k.removeprefix("module.").replace(".mobile_inverted_conv.", ".conv.")
        out[nk] = v
    return out


def read_ofa_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """`{"state_dict": ...}` or a bare state dict, loaded with weights_only=True (never unpickles code)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--checkpoint {p}: no such file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or a pickle that needs code to load
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--checkpoint {p}: not a loadable weights-only PyTorch checkpoint ({msg[:200]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"--checkpoint {p}: expected a state dict (or {{'state_dict': ...}}), got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise UserError(f"--checkpoint {p}: entry {k!r} is not a tensor ({type(v).__name__}); not a state dict")
    return normalize_keys(obj)


_ALTERNATIVES = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."),
                 (".linear.", ".linear.linear."), ("bn.", "bn.bn."), ("conv.weight", "conv.conv.weight"))
"""The spellings OFA's own `OFAMobileNetV3.load_state_dict` accepts for a key it does not know (static vs
dynamic layer names), tried in its order."""


def canonical_keys(sd: dict[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Rename a key that is not expected to the first of OFA's alternative spellings that is (else keep it)."""
    exp = set(expected)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in exp:
            for old, new in _ALTERNATIVES:
                if old in k and k.replace(old, new) in exp:
                    k = k.replace(old, new)
                    break
        out[k] = v
    return out


@dataclass(frozen=True)
class Detected:
    space: Space  # with num_classes set from the classifier
    key_map: dict[str, str]
    state_dict: dict[str, torch.Tensor]  # keys in canonical spelling


def detect_space(sd: dict[str, torch.Tensor], candidates: Iterable[Space]) -> Detected:
    """Width multiplier and class count from the shapes: the candidate whose stem and head widths fit."""
    cands = list(candidates)
    if cands:
        sd = canonical_keys(sd, ofa_key_map(cands[0]))
    for key in ("first_conv.conv.weight", "classifier.linear.weight"):
        if key not in sd:
            some = ", ".join(list(sd)[:3])
            raise UserError(f"tensor {key}: missing; not an OFA MobileNetV3 supernet checkpoint (its first tensors: {some})")
    cls = sd["classifier.linear.weight"]
    if cls.dim() != 2 or cls.shape[0] < 2:
        raise UserError(f"tensor classifier.linear.weight: shape {tuple(cls.shape)} is not (num_classes >= 2, features)")
    num_classes = int(cls.shape[0])
    stem = tuple(sd["first_conv.conv.weight"].shape)
    tried = []
    for sp in cands:
        sp = with_classes(sp, num_classes)
        km = ofa_key_map(sp)
        shapes = expected_shapes(sp, km)
        if stem == shapes["first_conv.conv.weight"] and tuple(cls.shape) == shapes["classifier.linear.weight"]:
            return Detected(sp, km, canonical_keys(sd, km))
        tried.append(f"{sp.name}: {shapes['first_conv.conv.weight']}")
    raise UserError(
        f"tensor first_conv.conv.weight: shape {stem} (with classifier {tuple(cls.shape)}) fits no OFA MobileNetV3 "
        f"supernet hwnas knows ({'; '.join(tried)}); only ofa_mbv3_d234_e346_k357 w1.0 and w1.2 are supported"
    )


def expected_shapes(space: Space, key_map: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """OFA key -> shape the hwnas supernet of `space` needs there."""
    from hwnas.supernet.network import Supernet

    with torch.device("meta"):
        hw = Supernet(space).state_dict()
    return {k: tuple(hw[v].shape) for k, v in key_map.items()}


def map_state_dict(det: Detected) -> dict[str, torch.Tensor]:
    """Rename by role after checking every tensor; UserError naming the first problem (and how many more)."""
    sd = det.state_dict
    shapes = expected_shapes(det.space, det.key_map)
    missing = [k for k in det.key_map if k not in sd and not k.endswith(_OPTIONAL_SUFFIX)]
    extra = [k for k in sd if k not in det.key_map]
    wrong = [k for k in det.key_map if k in sd and tuple(sd[k].shape) != shapes[k]]
    notfloat = [k for k in det.key_map if k in sd and not k.endswith(_OPTIONAL_SUFFIX) and not sd[k].is_floating_point()]
    _raise_first(missing, lambda k: f"tensor {k}: missing (expected shape {shapes[k]} for {det.space.name})")
    _raise_first(extra, lambda k: f"tensor {k}: unexpected in an OFA {det.space.name} supernet (shape {tuple(sd[k].shape)})")
    _raise_first(wrong, lambda k: f"tensor {k}: shape {tuple(sd[k].shape)}, expected {shapes[k]} for {det.space.name}")
    _raise_first(notfloat, lambda k: f"tensor {k}: dtype {sd[k].dtype}, expected a floating-point tensor")
    out: dict[str, torch.Tensor] = {}
    for k, hk in det.key_map.items():
        if k in sd:
            v = sd[k]
            out[hk] = v.to(torch.float32).clone() if v.is_floating_point() else v.to(torch.long).clone()
        else:
            out[hk] = torch.tensor(0, dtype=torch.long)
    return out


def _raise_first(keys: list[str], msg: Callable[[str], str]) -> None:
    if keys:
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        raise UserError(msg(keys[0]) + more)


def supernet_from_ofa(sd: dict[str, torch.Tensor], candidates: Iterable[Space] | None = None):
    """An hwnas Supernet holding exactly the OFA weights, and its space."""
    from hwnas.supernet.network import Supernet

    cands = list(candidates) if candidates is not None else [load_space(n) for n in OFA_SPACES]
    det = detect_space(normalize_keys(sd), cands)
    mapped = map_state_dict(det)
    net = Supernet(det.space)
    net.load_state_dict(mapped, strict=True)
    net.eval()
    return net


def import_ofa(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict:
    """`hwnas import-ofa`: read an OFA checkpoint, write an hwnas supernet checkpoint. The write is atomic
    (temporary file, then rename), so an existing --out is replaced only by a complete, checked import."""
    from hwnas.train.checkpoint import SupernetMeta, save_checkpoint

    out_p = Path(out)
    if out_p.is_dir():
        raise UserError(f"--out {out_p}: is a folder; give a checkpoint file path")
    if out_p.parent and not out_p.parent.exists():
        raise UserError(f"--out {out_p}: folder {out_p.parent} does not exist")
    sd = read_ofa_state_dict(checkpoint)
    net = supernet_from_ofa(sd)
    space = net.space
    meta = SupernetMeta(
        space=space.model_dump(mode="json"),
        data=IMPORTED_DATA,
        data_fingerprint="ofa:" + _sha256(Path(checkpoint)),
        config={"source": "once-for-all", "checkpoint": str(checkpoint), "width_mult": space.width_mult},
        phase="finished",
        epoch=0.0,
        finished=True,
        metrics={},
    )
    save_checkpoint(out_p, {"meta": meta.model_dump(mode="json"), "model": net.state_dict()})
    params = sum(p.numel() for p in net.parameters())
    return {"checkpoint": str(out_p), "space": space.name, "num_classes": space.num_classes, "params": int(params),
            "width_mult": space.width_mult, "tensors": len(sd)}


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
