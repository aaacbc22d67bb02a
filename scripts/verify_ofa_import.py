"""Check `hwnas import-ofa` against Once-for-All's own model code (not a CI test: needs the `ofa` package).

For w1.0 and w1.2: build OFA's `OFAMobileNetV3` (d234 e346 k357), give every tensor random values
(kernel transform matrices, SE, BN statistics included), save it as OFA does (w1.0 in the published
checkpoints' key spelling `.mobile_inverted_conv.` inside {"state_dict": ...}, w1.2 as a bare state
dict of today's OFA), run `hwnas import-ofa`, then on N random subnets compare logits:
  supernet:  OFA set_active_subnet + forward   vs  hwnas Supernet.set_active + forward
  extracted: OFA get_active_subnet() forward   vs  hwnas Supernet.extract(sub) forward
  onnx (two subnets): ONNX Runtime on hwnas's BN-folded export vs OFA
Relative difference = max|a - b| / max|b|; target <= 1e-5 (ONNX: export's own parity bound, 1e-4,
since folding BN into the convs changes fp32 rounding).

With `--checkpoint FILE` (a real OFA checkpoint, e.g. ofa_mbv3_d234_e346_k357_w1.0) the same comparison
runs on those weights, loaded into OFA's model by OFA's own `load_state_dict`.

Setup (OFA's top-level imports need torchvision, which is stubbed here):
  pip install --no-deps --target /tmp/ofa-site ofa
  PYTHONPATH=. python scripts/verify_ofa_import.py --ofa-site /tmp/ofa-site [--subnets 8] [--checkpoint FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import random
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

TARGET = 1e-5
PARITY_RTOL = 1e-4  # hwnas.export.core.PARITY_RTOL


def stub_torchvision() -> None:
    """OFA imports torchvision transforms/datasets at top level; none of it is used by the model classes."""
    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        pass

    class _Stub(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            if name[:1].isupper():  # a class OFA subclasses or instantiates
                cls = type(name, (object,), {"__init__": lambda self, *a, **k: None})
                setattr(self, name, cls)
                return cls
            return _module(f"{self.__name__}.{name}")

    def _module(name: str) -> types.ModuleType:
        if name not in sys.modules:
            m = _Stub(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            m.__path__ = []  # type: ignore[attr-defined]
            sys.modules[name] = m
        return sys.modules[name]

    for n in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets",
              "torchvision.models"):
        _module(n)


def ofa_supernet(width: float, seed: int) -> torch.nn.Module:
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    torch.manual_seed(seed)
    net = OFAMobileNetV3(n_classes=1000, dropout_rate=0.0, width_mult=width, ks_list=[3, 5, 7],
                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):  # kernel transforms: identity plus noise, so the transform matters
                p.copy_(torch.eye(p.shape[0]) + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1 and ".bn." in name and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(12345)
    return net.eval()


def save_like_ofa(net: torch.nn.Module, path: Path, published_names: bool) -> None:
    sd = net.state_dict()
    if published_names:  # the released checkpoints predate OFA's rename of mobile_inverted_conv -> conv
        sd = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v for k, v in sd.items()}
        torch.save({"state_dict": sd, "epoch": 180}, path)
    else:
        torch.save(sd, path)


def random_subnet(space, rng: random.Random) -> tuple[dict, dict]:
    """(OFA's set_active_subnet kwargs, hwnas subnet dict) for the same architecture."""
    d = [rng.choice(st.depths) for st in space.stages]
    n = sum(st.max_depth for st in space.stages)
    ks = [rng.choice([3, 5, 7]) for _ in range(n)]
    e = [rng.choice([3, 4, 6]) for _ in range(n)]
    kernels, expands, start = [], [], 0
    for st, di in zip(space.stages, d):
        kernels.append(ks[start:start + di])
        expands.append(e[start:start + di])
        start += st.max_depth
    res = rng.choice(space.resolutions)
    return dict(ks=ks, e=e, d=d), dict(resolution=res, depths=d, kernels=kernels, expands=expands)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def onnx_logits(static: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from hwnas.export.fold import fold_batchnorm
    from hwnas.runtime import export_onnx_bytes, make_session

    folded = fold_batchnorm(static)
    data = export_onnx_bytes(folded, x[:1])
    sess = make_session(data, threads=1)
    outs = [sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(x.shape[0])]
    return torch.cat([torch.from_numpy(o) for o in outs])


def ofa_from_file(path: Path) -> tuple[torch.nn.Module, float]:
    """OFA's model holding a real checkpoint's weights (loaded by OFA's own load_state_dict), and its width."""
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    n_classes = next(v.shape[0] for k, v in sd.items() if k.endswith("classifier.linear.weight") or k.endswith("classifier.linear.linear.weight"))
    errors = []
    for width in (1.0, 1.2):
        net = OFAMobileNetV3(n_classes=n_classes, dropout_rate=0.0, width_mult=width, ks_list=[3, 5, 7],
                             expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
        try:
            net.load_state_dict(sd)
            return net.eval(), width
        except (RuntimeError, AssertionError, ValueError) as e:
            errors.append(f"w{width}: {str(e).splitlines()[0][:200]}")
    raise SystemExit(f"{path}: OFA's own OFAMobileNetV3 does not load it ({'; '.join(errors)})")


def check_width(width: float, n_subnets: int, seed: int, work: Path, log, checkpoint: Path | None = None) -> dict:
    import hwnas
    from hwnas.cli import main as cli

    if checkpoint is not None:
        ofa, width = ofa_from_file(checkpoint)
        src = checkpoint
    else:
        ofa = ofa_supernet(width, seed)
        src = work / f"ofa_w{width}.pth"
        save_like_ofa(ofa, src, published_names=width == 1.0)
    out = work / f"hwnas_w{width}.pt"
    t = time.perf_counter()
    code = cli(["import-ofa", "--checkpoint", str(src), "--out", str(out), "--json"])
    assert code == 0, f"import-ofa exited {code}"
    import_s = time.perf_counter() - t
    net = hwnas.load_supernet(out)
    space = net.space
    rng = random.Random(seed)
    rows = []
    for i in range(n_subnets):
        ofa_kw, sub = random_subnet(space, rng)
        if i == 0:  # the largest and the smallest are the classic places for an off-by-one
            ofa_kw, sub = dict(ks=7, e=6, d=4), space.largest(224).model_dump()
        elif i == 1:
            ofa_kw, sub = dict(ks=3, e=3, d=2), space.smallest(128).model_dump()
        ofa.set_active_subnet(**ofa_kw)
        net.set_active(sub)
        x = torch.randn(2, 3, sub["resolution"], sub["resolution"], generator=torch.Generator().manual_seed(seed + i))
        with torch.no_grad():
            ref = ofa(x)
            got = net(x)
            ofa_static = ofa.get_active_subnet(preserve_weight=True).eval()
            ref_static = ofa_static(x)
            static = net.extract(sub).eval()
            got_static = static(x)
        row = dict(resolution=sub["resolution"], depths=sub["depths"], supernet_rel=rel(got, ref),
                   extracted_rel=rel(got_static, ref_static), ofa_static_vs_ofa=rel(ref_static, ref),
                   logit_scale=float(ref.abs().max()))
        if i in (2, 3):
            row["onnx_rel"] = rel(onnx_logits(static, x), ref)
        rows.append(row)
        log(f"  w{width} subnet {i}: res {row['resolution']} depths {row['depths']}: supernet {row['supernet_rel']:.2e}, "
            f"extracted {row['extracted_rel']:.2e}" + (f", onnx {row['onnx_rel']:.2e}" if "onnx_rel" in row else ""))
    worst = max(max(r["supernet_rel"], r["extracted_rel"]) for r in rows)
    worst_onnx = max(r.get("onnx_rel", 0.0) for r in rows)
    return dict(width=width, space=space.name, import_seconds=import_s, subnets=rows, worst_rel=worst,
                worst_onnx_rel=worst_onnx, ok=worst <= TARGET and worst_onnx <= PARITY_RTOL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ofa-site", default=None, help="folder holding the `ofa` package (pip install --target)")
    ap.add_argument("--subnets", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 1.2])
    ap.add_argument("--checkpoint", default=None, help="a real OFA MobileNetV3 checkpoint to check instead of random weights")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    if a.ofa_site:
        sys.path.insert(0, a.ofa_site)
    stub_torchvision()
    torch.set_num_threads(1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory() as d:
        if a.checkpoint:
            log(f"{a.checkpoint}:")
            results.append(check_width(0.0, a.subnets, a.seed, Path(d), log, checkpoint=Path(a.checkpoint)))
        for w in [] if a.checkpoint else a.widths:
            log(f"OFAMobileNetV3 w{w}:")
            results.append(check_width(w, a.subnets, a.seed, Path(d), log))
    ok = all(r["ok"] for r in results)
    summary = {"ok": ok, "target_rel": TARGET, "torch": torch.__version__, "results": results}
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2))
    for r in results:
        print(f"{r['space']}: {len(r['subnets'])} subnets, worst relative logit difference {r['worst_rel']:.2e} "
              f"(target {TARGET:g}); ONNX {r['worst_onnx_rel']:.2e} (target {PARITY_RTOL:g}): {'OK' if r['ok'] else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
