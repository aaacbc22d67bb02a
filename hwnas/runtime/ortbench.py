#!/usr/bin/env python3
"""Standalone ONNX Runtime latency measurement: the one timing protocol hwnas uses everywhere.

This file needs only the Python standard library, numpy and onnxruntime (no torch, no hwnas),
because `hwnas profile-bundle` copies it verbatim as `runner.py` into a folder that users carry
to a device we cannot reach. `hwnas profile` imports the same functions, so a table measured
here and a table measured on a phone-class board follow exactly the same protocol.

Usage on the device (inside a bundle folder):
    python3 runner.py [--threads N] [--provider EP] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

RUNNER_VERSION = 1

DEFAULT_PROTOCOL = {
    "warmup_runs": 10,      # untimed runs before the first timed run of a graph
    "warmup_s": 0.01,       # ... and at least this long
    "revisit_warmup_runs": 3,  # untimed runs each time an interleaved round comes back to a graph
    "min_repeats": 60,      # timed runs per graph (over all rounds), at least
    "max_repeats": 2000,    # ... at most
    "min_time_s": 0.2,      # timed seconds per graph (over all rounds), at least: rounds long enough to span moments
    "rounds": 6,            # interleaved passes over all graphs, so each graph is timed at several moments
    "estimator": "min-round-median",  # a graph's latency: the lowest of its rounds' medians ("median": all
                                      # samples pooled, tables before 2026-12-03); see `estimate`
    "min_span_s": 0.5,      # a graph timed on its own (measure_latency) spreads its rounds over this long
    "noisy_rel_mad": 0.05,  # median absolute deviation / median above this -> the entry is re-measured
    "max_remeasure": 1,     # re-measurements of a noisy entry: one more round (median: the least dispersed kept)
    "net_call": "session-run",  # whole networks: "session-run" (numpy in and out, as an application calls
                                # a model) or "io-binding" (pre-bound buffers; tables before 2026-12-02)
}


PROFILE_CHUNK = 640  # graphs alive at once while profiling: all pieces of several resolutions cycle together


def make_session(model, threads=1, provider="CPUExecutionProvider", dim_overrides=None, spinning=True):
    """A session with deployment options: all graph optimisations, `threads` intra-op threads,
    one inter-op thread, sequential execution; free dimensions pinned by name if given.

    `spinning=False` stops idle intra-op threads from busy-waiting: needed when hundreds of
    multi-threaded sessions are alive at once (profiling cycles), where the spinning pool threads
    of the sessions that just ran would steal the cores from the one being timed."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not spinning and int(threads) > 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    for name, value in (dim_overrides or {}).items():
        so.add_free_dimension_override_by_name(name, int(value))
    return ort.InferenceSession(model, sess_options=so, providers=[provider])


def random_feed(session, shape, seed=0):
    inp = session.get_inputs()[0]
    return {inp.name: np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)}


def bound_runner(session, feed):
    """A no-argument callable running `session` once with pre-bound input and output buffers.

    IO binding keeps the per-run cost to the graph itself: no numpy conversion of inputs and no
    allocation or copy of outputs, which would otherwise add a size-dependent cost to every
    isolated block that a whole network does not pay between its blocks."""
    import onnxruntime as ort

    outs = session.run(None, feed)
    binding = session.io_binding()
    keep = []
    for name, arr in feed.items():
        v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
        keep.append(v)
        binding.bind_ortvalue_input(name, v)
    for meta, arr in zip(session.get_outputs(), outs):
        v = ort.OrtValue.ortvalue_from_numpy(np.empty_like(arr))
        keep.append(v)
        binding.bind_ortvalue_output(meta.name, v)
    run = session.run_with_iobinding

    def once():
        run(binding)

    once.keep = keep  # the bound buffers live as long as the callable
    return once


def called_runner(session, feed):
    """A no-argument callable running `session` once as an application calls it: `session.run` with a
    numpy input, outputs allocated per call. A whole network is timed this way (protocol key
    net_call "session-run"): the few microseconds of conversion and allocation are part of what a
    deployed model costs, 14% of a 0.03 ms model on a 2-core VM."""
    run = session.run

    def once():
        run(None, feed)

    return once


def net_runner(session, feed, net_call):
    """The runner for a whole network under the protocol's `net_call`."""
    if net_call not in ("session-run", "io-binding"):
        raise ValueError(f"net_call must be 'session-run' or 'io-binding', got {net_call!r}")
    return called_runner(session, feed) if net_call == "session-run" else bound_runner(session, feed)


def warm_up(fn, runs, seconds=0.0):
    t_end = time.perf_counter() + seconds
    n = 0
    while n < runs or (time.perf_counter() < t_end and n < 100000):
        fn()
        n += 1


def time_runs(fn, min_repeats, min_time_s, max_repeats):
    """Timed calls of `fn` (ms) until both `min_repeats` calls and `min_time_s` seconds, at most `max_repeats`."""
    clock = time.perf_counter_ns
    out = []
    t0 = time.perf_counter()
    while len(out) < max_repeats:
        a = clock()
        fn()
        out.append((clock() - a) / 1e6)
        if len(out) >= min_repeats and time.perf_counter() - t0 >= min_time_s:
            break
    return out


def summarize(samples):
    """Median, mean, p10, p90, median absolute deviation (ms) and the number of runs."""
    s = np.asarray(samples, dtype=np.float64)
    med = float(np.median(s))
    return {
        "median_ms": med,
        "mean_ms": float(s.mean()),
        "p10_ms": float(np.percentile(s, 10)),
        "p90_ms": float(np.percentile(s, 90)),
        "mad_ms": float(np.median(np.abs(s - med))),
        "repeats": int(s.size),
    }


ESTIMATORS = ("min-round-median", "median")


def estimate(rounds, estimator):
    """One summary of a graph timed in rounds (lists of samples, ms), as the protocol's `estimator` says.

    "median" pools every sample. "min-round-median" keeps the round whose median is lowest (its
    dispersion too; `repeats` counts every sample): on a shared VM the host can slow everything by
    up to 1.8x for tenths of a second to seconds at a time (a pure-Python loop on a 2-vCPU EPYC VM
    with nothing else running: 0.77 or 1.28 ms per window, BENCHMARKS.md), so a pooled median lands
    in whichever state lasted longer, while the fastest round is the undisturbed speed, which is
    what the device itself delivers and what stays the same from one measurement to the next."""
    rounds = [r for r in rounds if len(r)]
    if not rounds:
        raise ValueError("no latency samples")
    if estimator == "median":
        return summarize([t for r in rounds for t in r])
    if estimator != "min-round-median":
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    best = summarize(min(rounds, key=lambda r: float(np.median(r))))
    best["repeats"] = sum(len(r) for r in rounds)
    return best


def rel_spread(stats):
    """Relative dispersion used to flag noisy entries: MAD / median (robust to rare outliers)."""
    return stats["mad_ms"] / stats["median_ms"] if stats["median_ms"] > 0 else 0.0


class Progress:
    """A one-line progress bar with the time left on stderr (no third-party dependency)."""

    def __init__(self, total, label, enabled=True, stream=None):
        self.total, self.label, self.enabled = max(int(total), 1), label, enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.done = 0
        self._last = 0.0

    def update(self, n=1):
        if self.done >= self.total:
            return  # already reported complete
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        now = time.perf_counter()
        tty = getattr(self.stream, "isatty", lambda: False)()
        finished = self.done >= self.total
        # a terminal gets a live bar; a log file one line every 5 s (and the last one)
        if not finished and now - self._last < (0.25 if tty else 5.0):
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        el = now - self.t0
        left = el / frac - el if frac > 0 else 0.0
        bar = "#" * int(frac * 24)
        end = "\r" if tty and not finished else "\n"
        self.stream.write(f"{self.label} [{bar:<24}] {self.done}/{self.total}  {el:4.0f}s elapsed, ~{left:4.0f}s left{end}")
        self.stream.flush()


def measure_many(jobs, protocol=None, threads=1, provider="CPUExecutionProvider", progress=True, label="measuring", chunk=256):
    """Measure every job; jobs are dicts with key, model (path or bytes), shape, dim_overrides and
    an optional `cyclic` flag. Returns {key: stats dict with an extra 'remeasured' count}.

    Whole networks (cyclic false) are timed back to back, as a deployed model runs, in `rounds`
    interleaved passes, so each is timed at several moments; the protocol's `estimator` makes one
    latency of its rounds (`estimate`: by default the fastest round's median, which a slowdown of the
    host for part of the time does not move). A noisy one is measured again (one more round).

    Pieces of a network (cyclic true) are timed one run at a time in shuffled cycles over all of
    them: between two runs of a block every other block runs, so its weights and buffers are
    evicted from the caches as they are between two inferences of a whole network. Timing a
    block back to back instead finds everything hot in L1/L2 and under-estimates its share of a
    network (on a 2-core EPYC VM by about 40% for ImageNet-size subnets). Pieces are also timed
    back to back (`hot_median_ms`): for tiny networks, where fixed per-run costs dominate, that is
    the better regressor, and the calibration fit chooses. Noisy pieces get more cycles."""
    p = dict(DEFAULT_PROTOCOL)
    p.update(protocol or {})
    rounds = max(1, int(p["rounds"]))
    per_min_rep = max(3, -(-int(p["min_repeats"]) // rounds))
    per_max_rep = max(per_min_rep, int(p["max_repeats"]) // rounds)
    per_time = float(p["min_time_s"]) / rounds
    noisy = float(p["noisy_rel_mad"])
    results = {}
    n_cyc = sum(1 for j in jobs if j.get("cyclic"))
    bar = Progress((len(jobs) - n_cyc) * rounds + per_min_rep * rounds * n_cyc, label, enabled=progress)
    rng = np.random.default_rng(0)
    for start in range(0, len(jobs), chunk):
        part = jobs[start : start + chunk]
        fns = []
        for j in part:
            # pieces cycle among hundreds of live sessions: their idle pool threads must not spin
            s = make_session(j["model"], threads, provider, j.get("dim_overrides"), spinning=not j.get("cyclic"))
            feed = random_feed(s, j["shape"])
            fn = bound_runner(s, feed) if j.get("cyclic") else net_runner(s, feed, p["net_call"])
            warm_up(fn, int(p["warmup_runs"]), float(p["warmup_s"]))
            fns.append(fn)
        rounds_of = [[] for _ in part]  # per graph: one list of samples per round
        cyc = [i for i, j in enumerate(part) if j.get("cyclic")]
        seq = [i for i, j in enumerate(part) if not j.get("cyclic")]
        clock = time.perf_counter_ns

        def cycles(n, record, count):
            order = list(cyc)
            for i in record:
                rounds_of[i].append([])
            for _ in range(n):
                rng.shuffle(order)
                for i in order:
                    a = clock()
                    fns[i]()
                    t = (clock() - a) / 1e6
                    if i in record:
                        rounds_of[i][-1].append(t)
                if count:
                    bar.update(len(order))

        hot = {i: [] for i in cyc}
        for r in range(rounds):
            if cyc:
                cycles(per_min_rep, set(cyc), True)
                for i in cyc:  # the same pieces back to back (caches hot) for the calibration to weigh
                    warm_up(fns[i], int(p["revisit_warmup_runs"]))
                    hot[i].append(time_runs(fns[i], per_min_rep, 0.0, per_min_rep))
            for i in seq:
                if r > 0:
                    warm_up(fns[i], int(p["revisit_warmup_runs"]))
                rounds_of[i].append(time_runs(fns[i], per_min_rep, per_time, per_max_rep))
                bar.update()
        est = p["estimator"]
        stats = {i: dict(estimate(rounds_of[i], est), remeasured=0) for i in range(len(part))}
        for _ in range(int(p["max_remeasure"])):
            again = {i for i in cyc if rel_spread(stats[i]) > noisy}
            if again:  # more cycles (over all pieces, so the cache state stays the same): one more round of them
                cycles(int(p["min_repeats"]), again, False)
                for i in again:
                    stats[i] = dict(estimate(rounds_of[i], est), remeasured=stats[i]["remeasured"] + 1)
            for i in seq:
                if rel_spread(stats[i]) <= noisy:
                    continue
                warm_up(fns[i], int(p["warmup_runs"]))
                extra = time_runs(fns[i], int(p["min_repeats"]), float(p["min_time_s"]), int(p["max_repeats"]))
                n_re = stats[i]["remeasured"] + 1
                if est == "median":  # the least dispersed of the two measurements
                    new = summarize(extra)
                    stats[i] = dict(new if rel_spread(new) < rel_spread(stats[i]) else stats[i], remeasured=n_re)
                else:  # one more round
                    rounds_of[i].append(extra)
                    stats[i] = dict(estimate(rounds_of[i], est), remeasured=n_re)
        for i in cyc:
            h = estimate(hot[i], est)
            stats[i]["hot_median_ms"], stats[i]["hot_mad_ms"] = h["median_ms"], h["mad_ms"]
        for i, j in enumerate(part):
            results[j["key"]] = stats[i]
        del fns
    return results


def measure_all(jobs, protocol=None, threads=1, provider="CPUExecutionProvider", progress=True):
    """A profile: the pieces (cycling among themselves), then the whole calibration networks in a
    second pass with the pieces' sessions gone, in small groups as `latency validate` and a
    deployment measure them (measured inside the pieces' pass they came out ~8% slower for
    mbv3-cifar, whose networks would otherwise find caches and allocator state disturbed)."""
    pieces = [j for j in jobs if j.get("cyclic")]
    nets = [j for j in jobs if not j.get("cyclic")]
    res = measure_many(pieces, protocol, threads, provider, progress, label="measuring pieces", chunk=PROFILE_CHUNK)
    res.update(measure_many(nets, protocol, threads, provider, progress, label="measuring whole subnets", chunk=16))
    return res


def fingerprint(provider="CPUExecutionProvider", threads=1, batch=1):
    """What identifies the target: CPU model, cores, OS, ONNX Runtime version and settings."""
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                low = line.lower()
                if low.startswith("model name") or low.startswith("hardware") or low.startswith("cpu model"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu or platform.machine() or "unknown",
        "cores": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "provider": provider,
        "threads": int(threads),
        "batch": int(batch),
    }


def _write_json_atomic(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_bundle(bundle, threads=None, provider=None, out=None, progress=True):
    """Measure every graph a bundle's manifest lists; write the results JSON next to it."""
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    threads = int(threads if threads is not None else manifest.get("threads", 1))
    provider = provider or manifest.get("provider", "CPUExecutionProvider")
    jobs = []
    for group, cyclic in ((manifest["entries"], True), (manifest["calibration"], False)):
        for e in group:
            jobs.append({
                "key": e["key"], "model": os.path.join(bundle, e["file"]), "shape": e["shape"],
                "dim_overrides": e.get("dim_overrides") or {}, "cyclic": cyclic,
            })
    t0 = time.time()
    res = measure_all(jobs, manifest.get("protocol"), threads, provider, progress)
    out = out or os.path.join(bundle, "results.json")
    _write_json_atomic(out, {
        "runner_version": RUNNER_VERSION,
        "bundle_id": manifest["bundle_id"],
        "fingerprint": fingerprint(provider, threads, 1),
        "protocol": dict(DEFAULT_PROTOCOL, **(manifest.get("protocol") or {})),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - t0, 2),
        "results": res,
    })
    return out


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="Measure an hwnas profile bundle with ONNX Runtime (needs only onnxruntime and numpy).")
    ap.add_argument("--bundle", default=here, help="bundle folder (default: the folder of this script)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the manifest's)")
    ap.add_argument("--provider", default=None, help="execution provider (default: the manifest's)")
    ap.add_argument("--out", default=None, help="results file (default: BUNDLE/results.json)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    if not os.path.isfile(os.path.join(a.bundle, "manifest.json")):
        print(f"runner: {a.bundle} has no manifest.json; run this inside a bundle folder or pass --bundle", file=sys.stderr)
        return 2
    try:
        import onnxruntime as ort
    except ImportError:
        print("runner: onnxruntime is not installed (pip install onnxruntime numpy)", file=sys.stderr)
        return 2
    prov = a.provider
    if prov is not None and prov not in ort.get_available_providers():
        print(f"runner: --provider {prov} is not available; available: {', '.join(ort.get_available_providers())}", file=sys.stderr)
        return 2
    if a.threads is not None and a.threads < 1:
        print("runner: --threads must be >= 1", file=sys.stderr)
        return 2
    out = run_bundle(a.bundle, a.threads, prov, a.out, progress=not a.quiet)
    print(f"runner: wrote {out}; copy it back and run `hwnas profile-import --bundle <this folder> --out TABLE`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
