"""Elastic overhead: supernet running a subnet vs the extracted static network (fwd+bwd, CPU).

Target (issue 2): ratio supernet / static <= 1.15 at batch 64 on mbv3-cifar for the
smallest, a middle and the largest subnet. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from hwnas import Supernet, load_space


def middle(space):
    mid = lambda xs: xs[len(xs) // 2]  # noqa: E731
    depths = [mid(s.depths) for s in space.stages]
    return space.validate_subnet(
        dict(
            resolution=mid(space.resolutions),
            depths=depths,
            kernels=[[mid(s.kernels)] * d for s, d in zip(space.stages, depths)],
            expands=[[mid(s.expands)] * d for s, d in zip(space.stages, depths)],
        )
    )


def step_time(model, x, y, opt) -> float:
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="mbv3-cifar")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = load_space(args.space)
    rows = []
    for label, sub in (("smallest", space.smallest()), ("middle", middle(space)), ("largest", space.largest())):
        sup = Supernet(space).train()
        sup.set_active(sub)
        static = sup.extract(sub).train()
        x = torch.randn(args.batch, 3, sub.resolution, sub.resolution)
        y = torch.randint(0, space.num_classes, (args.batch,))
        opts = {m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m in (sup, static)}
        times: dict[str, list[float]] = {"supernet": [], "static": []}
        for i in range(args.steps + 3):  # interleaved, first 3 are warm-up
            for name, m in (("supernet", sup), ("static", static)):
                t = step_time(m, x, y, opts[m])
                if i >= 3:
                    times[name].append(t)
        s, st = statistics.median(times["supernet"]), statistics.median(times["static"])
        rows.append((label, sub.resolution, s * 1e3, st * 1e3, s / st))
    print(f"# bench_supernet: {args.space}, batch {args.batch}, {args.threads} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, median of {args.steps} fwd+bwd+SGD steps")
    print("| subnet | res | supernet ms/step | static ms/step | ratio |")
    print("|---|---|---|---|---|")
    for label, r, s, st, ratio in rows:
        print(f"| {label} | {r} | {s:.1f} | {st:.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
